"""URLs lose their user info, query and fragment, whatever characters the secrets hold."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from geoseg.core.urls import public_url

secret = st.text(string.ascii_letters + string.digits + "/:@%+=?", min_size=4, max_size=20)


def test_keeps_scheme_host_port_and_path():
    assert public_url("s3://key:secret@bucket/a/b.zarr?X-Amz-Signature=abc#frag") == "s3://bucket/a/b.zarr"
    assert public_url("https://u:p@host:8443/x.tif?token=t") == "https://host:8443/x.tif"
    assert public_url("/data/scene.tif") == "/data/scene.tif"
    assert public_url("C:/data/scene.tif") == "C:/data/scene.tif"


@given(user=secret, password=secret, token=secret)
def test_no_secret_survives(user, password, token):
    url = f"s3://{user}:{password}@bucket/scene.zarr?sig={token}#{token}"
    shown = public_url(url)
    assert shown.startswith("s3://")
    for part in (f"{user}:{password}@", f"?sig={token}", f"#{token}"):
        assert part not in shown


def test_malformed_url_is_cut_not_refused():
    assert public_url("s3://us/er:pa:ss@bucket:port/x?q=1") == "s3://bucket:port/x"


def test_at_sign_in_a_path_is_kept():
    assert public_url("gs://bucket/tiles/a@2x.tif") == "gs://bucket/tiles/a@2x.tif"
    assert public_url("s3://Bucket/Scene.zarr") == "s3://Bucket/Scene.zarr"


def test_credentials_are_found_in_object_store_urls_only():
    from geoseg.core.urls import credentials_in, credentials_refused

    for url in ("s3://KEY:SECRET@bucket/a.zarr", "s3://KEY@bucket/a.zarr",
                "s3://KEY:SEC/RET@bucket/a.zarr", "S3A://K:S@bucket/a", "gs://K:S@bucket/a.tif",
                "simplecache::s3://KEY:SECRET@bucket/a.tif"):
        assert credentials_in(url) is not None, url
    for url in ("s3://bucket/tiles/a@2x.tif", "s3://bucket/a.tif?sig=a@b", "/data/a@b.tif",
                "https://user:password@host/a.tif", "http://u@host:8080/a.zarr",
                "abfs://container@account.dfs.core.windows.net/a.zarr", "memory://a@b/c"):
        assert credentials_in(url) is None, url
    message = credentials_refused("s3://AKID1:Sec/Ret@bucket/a.zarr?x=1", "Input")
    assert message.startswith("Input s3://bucket/a.zarr: received a URL with credentials")
    assert "AKID1" not in message and "Sec" not in message and "Ret" not in message
    assert "storage_options" in message and "AWS_PROFILE" in message
    assert credentials_refused("s3://bucket/a.zarr", "Input") is None
