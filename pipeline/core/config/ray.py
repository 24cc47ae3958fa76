"""The ``ray:`` section: where `vigil run` runs its inference replicas."""

from __future__ import annotations

from pydantic import Field

from pipeline.core.config.base import ID_PATTERN, Strict


class RayConfig(Strict):
    """Where `vigil run` runs its inference replicas: a Ray of its own, or an existing Ray cluster."""

    address: str | None = Field(default=None, description=(
        "An existing Ray cluster: its head's HOST:PORT (GCS), ray://HOST:10001 (Ray Client) or `auto` (the "
        "cluster this machine belongs to). $RAY_ADDRESS and `vigil run --ray-address` set it too. Unset: "
        "`vigil run` starts a Ray of its own on this machine and stops it on exit."))
    app_name: str = Field(default="vigil-run", pattern=ID_PATTERN, description=(
        "The Serve application `vigil run` deploys, and deletes on exit. On a cluster no other application "
        "may have this name (the RayService's is `vigil`): `vigil run` refuses to start rather than replace it."))
    route_prefix: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9_./-]*$", description=(
        "The application's HTTP route (POST <prefix>/classify). Default: `/` on a Ray of its own, "
        "`/<app_name>` on a cluster (beside the cluster's other applications)."))

    def route_on(self, attached: bool) -> str:
        """The route prefix of the application, on a cluster (``attached``) or on a Ray of its own."""
        if self.route_prefix is not None:
            return self.route_prefix
        return f"/{self.app_name}" if attached else "/"
