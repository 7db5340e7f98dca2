"""The environment variables that choose an embedder, and the HTTP embedder's default API
root: read by the spec parsing, the HTTP embedder and the CLI alike, which need not import
httpx for them."""

#: Names the embedder of every pipeline that is not given one (see ``embedder_from_spec``).
EMBEDDER_ENV = "ANCHORLINE_EMBEDDER"
#: The API root of an ``openai:<model>`` embedder.
EMBEDDER_URL_ENV = "ANCHORLINE_EMBEDDER_URL"
DEFAULT_EMBEDDER_URL = "https://api.openai.com/v1"
