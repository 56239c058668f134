"""The Responses API feature: a turn in its stored conversation (`turn`), the hosted web search (`websearch`) and
the stored responses themselves (`repo`). Routes: `server/routes/openai_text.py`."""
