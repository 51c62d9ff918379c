"""The live monitoring screen and the JSON query API (aiohttp, one port).

Public entry points (used by engine/runtime.py):
    create_web_app(settings, live_reader, history_store) -> aiohttp.web.Application
    async start_web(settings, live_reader, history_store) -> (aiohttp.web.AppRunner, url)
"""
from engine.web.app import create_web_app, start_web

__all__ = ["create_web_app", "start_web"]
