"""Start Flower on 127.0.0.1 with basic auth from settings (FLOWER_BASIC_AUTH in .env)."""
from __future__ import annotations

import sys

from docenrich.config import get_settings


def main() -> int:
    """Run Flower on 127.0.0.1, only with basic auth."""
    settings = get_settings()
    if ":" not in settings.flower_basic_auth:
        sys.stderr.write(
            "Flower needs FLOWER_BASIC_AUTH=user:password in .env (it shows task arguments and can "
            "revoke tasks, so it never runs open).\n"
        )
        return 2
    from docenrich.celery_app import celery_app

    celery_app.start(
        [
            "flower",
            "--address=127.0.0.1",
            f"--port={settings.flower_port}",
            f"--basic-auth={settings.flower_basic_auth}",
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
