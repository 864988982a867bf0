"""Provision dashboards through Grafana's HTTP API (the maintained ``grafana-client`` package).

Idempotent: each dashboard is written by its uid with ``overwrite``, into a folder found (or created) by title.
"""
from __future__ import annotations


class GrafanaPushError(RuntimeError):
    """Grafana refused or could not be reached; the message names the URL and what to check."""


def push_dashboards(url: str, dashboards: dict[str, dict], token: str | None = None,
                    basic_auth: tuple[str, str] | None = None, folder: str | None = "seedr1",
                    timeout_s: float = 10.0) -> list[str]:
    """Create or overwrite every dashboard; returns their uids."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaUnauthorizedError
    from niquests.exceptions import ConnectionError as NConnectionError, Timeout

    api = GrafanaApi.from_url(url, credential=token or basic_auth, timeout=timeout_s)
    try:
        folder_uid = None
        if folder:
            found = [f for f in api.folder.get_all_folders() if f.get("title") == folder]
            folder_uid = found[0]["uid"] if found else api.folder.create_folder(folder)["uid"]
        uids = []
        for dash in dashboards.values():
            body = {"dashboard": {**dash, "id": None}, "overwrite": True, "message": "seedr1 dashboards push"}
            if folder_uid:
                body["folderUid"] = folder_uid
            api.dashboard.update_dashboard(body)
            uids.append(dash["uid"])
        return uids
    except GrafanaUnauthorizedError as e:
        raise GrafanaPushError(f"{url}: Grafana refused the credentials (HTTP 401); pass --token with an API/service "
                               f"account token or --basic-auth user:password") from e
    except GrafanaClientError as e:
        raise GrafanaPushError(f"{url}: Grafana answered HTTP {getattr(e, 'status_code', '?')}: {e}") from e
    except (NConnectionError, Timeout, OSError) as e:
        raise GrafanaPushError(f"{url}: cannot reach Grafana ({type(e).__name__}); check the URL and that the "
                               f"server is up") from e
