"""Settings derived from the environment mean what they say."""

from django.conf import settings
from kombu import Connection

from config.settings import _celery_broker_url


def test_a_unix_socket_redis_db_reaches_celery_as_that_db() -> None:
    # given the session's real Redis on a Unix socket, asked for db 5
    socket_url = settings.REDIS_URL.split("?")[0]
    broker = _celery_broker_url(f"{socket_url}?db=5")

    # when kombu connects with Celery's spelling of that URL
    with Connection(broker) as connection:
        db = connection.default_channel.client.connection_pool.connection_kwargs["db"]

    # then Celery uses db 5, not db 0 (kombu ignores `?db=` on socket URLs)
    assert broker.startswith("redis+socket://")
    assert db == 5


def test_a_tcp_redis_url_is_passed_to_celery_unchanged() -> None:
    assert _celery_broker_url("redis://redis.internal:6379/3") == "redis://redis.internal:6379/3"


def test_importing_the_settings_starts_no_server_and_names_what_is_missing(tmp_path) -> None:
    # given an environment with no servers configured and an empty data dir
    import os
    import subprocess
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HALLMARK_") and k != "DJANGO_SETTINGS_MODULE"
    }
    env["HALLMARK_DATA_DIR"] = str(tmp_path / "data")
    env["HALLMARK_SECRET_KEY"] = "settings-test"  # past the secret, to the servers

    # when a process imports the settings
    result = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then it fails with a message that says what to set, and nothing was started
    assert result.returncode != 0
    assert "HALLMARK_DATABASE_URL is required" in result.stderr
    assert "hallmark up" in result.stderr
    assert not (tmp_path / "data").exists()
