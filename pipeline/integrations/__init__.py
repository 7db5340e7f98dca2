"""Drop-in conversation memory for agent frameworks, each an optional extra.

- :mod:`anchorline.integrations.openai_agents`: ``AnchorlineSession``, a session
  for the OpenAI Agents SDK (``pip install 'anchorline[openai-agents]'``).
- :mod:`anchorline.integrations.pydantic_ai`: store and load Pydantic AI message
  histories (``pip install 'anchorline[pydantic-ai]'``).

See ``docs/integrations.md``.
"""
