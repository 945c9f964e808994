"""A fake Telegram Bot API server for driving the real bot end to end.

fake = FakeTelegram(token="123456:TEST-token", bot_username="haven_test_bot")
await fake.start()            # fake.base_url == "http://127.0.0.1:<port>"
user = fake.user(1001, "Sam")
await user.send("/start")
replies = await user.replies()
await user.press("Let's begin")
"""

from .models import ChatMessage
from .server import FakeTelegram
from .user import FakeUser, tiny_png

__all__ = ["ChatMessage", "FakeTelegram", "FakeUser", "tiny_png"]
