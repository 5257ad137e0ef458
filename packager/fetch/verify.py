"""``verify``: check a published repository the way an agent would, before agents see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from packager.errors import PackagerError
from packager.fetch.client import UpdateClient
from packager.fetch.gotuf import non_utc_warning


@dataclass
class VerifyReport:
    update_url: str
    roles: list[dict[str, object]] = field(default_factory=list)
    targets: list[dict[str, object]] = field(default_factory=list)
    channels: dict[str, dict[str, str]] = field(default_factory=dict)  # name/platform -> ch -> ver
    problems: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # reported, not failing

    def to_json(self) -> dict[str, object]:
        return {
            "update_url": self.update_url,
            "roles": self.roles,
            "targets": self.targets,
            "channels": self.channels,
            "problems": self.problems,
            "failures": self.failures,
            "warnings": self.warnings,
            "ok": not self.problems and not self.failures,
        }


def verify_repository(
    client: UpdateClient,
    *,
    patterns: list[str],
    warn: timedelta,
    now: datetime,
    download_dir: Path | None,
) -> VerifyReport:
    """Refresh from the trusted root, then download and verify every (matching) target."""
    report = VerifyReport(update_url=client.update_url)
    for info in client.roles():
        left = info.expires - now
        state = "expired" if left <= timedelta(0) else "expiring" if left <= warn else "ok"
        report.roles.append(
            {
                "role": info.role,
                "version": info.version,
                "expires": info.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "state": state,
            }
        )
        if state != "ok":
            report.problems.append(f"{info.role}.json {state} ({info.expires:%Y-%m-%d %H:%M} UTC)")
    non_utc = non_utc_warning(client.metadata_dir)
    if non_utc:
        report.warnings.append(non_utc)
    for path, tf in client.targets(patterns or None).items():
        keep = download_dir / path if download_dir else None
        if keep:
            keep.parent.mkdir(parents=True, exist_ok=True)
        entry: dict[str, object] = {"path": path, "length": tf.length, "hashes": tf.hashes}
        version = (tf.unrecognized_fields.get("custom") or {}).get("version")
        entry["version"] = version
        try:
            client.stream_verify(path, tf, keep)
            entry["ok"] = True
        except PackagerError as exc:
            entry["ok"] = False
            entry["error"] = str(exc)
            report.failures.append(str(exc))
        report.targets.append(entry)
        parts = path.split("/")
        if len(parts) >= 4:
            key = "/".join(parts[:-2])
            report.channels.setdefault(key, {})[parts[-2]] = str(version)
    return report


def render_text(report: VerifyReport) -> str:
    lines = [f"update server: {report.update_url}"]
    for r in report.roles:
        lines.append(f"  {r['role']:<10} v{r['version']:<6} expires {r['expires']}  {r['state']}")
    for key, channels in sorted(report.channels.items()):
        shown = ", ".join(f"{ch}={v}" for ch, v in sorted(channels.items()))
        lines.append(f"  {key}: {shown}")
    ok = sum(1 for t in report.targets if t["ok"])
    lines.append(f"targets verified: {ok}/{len(report.targets)}")
    lines.extend(f"error: {f}" for f in report.failures)
    lines.extend(f"warning: {p}" for p in report.problems)
    lines.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(lines)
