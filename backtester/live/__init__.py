"""Live bots: the pure parts (decisions from the engine, sizing); models, services and tasks
live in backtester/models/live.py, backtester/services/live_bots.py, backtester/tasks/live_bots.py.
"""
