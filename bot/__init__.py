"""Haven: a Telegram bot that coaches people in building emotional safety in their relationships."""
