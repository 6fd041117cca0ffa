"""`digitalocean` rig: a Space in region nyc3 on the session's moto server, reached through the
Spaces profile with `endpoint` pointing at moto instead of nyc3.digitaloceanspaces.com."""

from __future__ import annotations

import pytest

from tests.servers.moto import shared_moto
from tests.storage.rig_aws import S3Rig


class SpacesRig(S3Rig):
    type = "digitalocean"


@pytest.fixture
def rig_digitalocean(request, tmp_path_factory):
    rig = SpacesRig(shared_moto(request.config, tmp_path_factory), "rtk-conformance-do", "nyc3")
    yield rig
    rig.restore()
