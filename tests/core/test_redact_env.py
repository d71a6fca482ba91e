"""Credentials in the environment and in a spec's environment mappings are hidden whatever they
are named by Azure and whatever YAML reads them as; the path of a credentials file, and a path
holding ':' and '@', are no secret."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from geoseg.core import redact
from geoseg.jobs import JobSpec
from tests.cli import geoseg
from tests.conftest import job_dict

CONNECTION = ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AzureAcctKeyVVV123456==;"
              "EndpointSuffix=core.windows.net")
SAS = "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&sig=SasSigXYZ98765"


def test_azure_credentials_in_the_environment_are_hidden(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", CONNECTION)
    monkeypatch.setenv("AZURE_STORAGE_KEY", "AzureStorageKeyUUU789")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "AzureAccountKeyTTT456")
    monkeypatch.setenv("MY_SAS_CONNECTION", SAS)
    found = redact.env_secrets()
    assert {CONNECTION, "AzureStorageKeyUUU789", "AzureAccountKeyTTT456", "AzureAcctKeyVVV123456=="} <= found
    # a library's message quoting the key alone, or the whole string
    said = redact.scrub(f"adlfs: bad key AccountKey=AzureAcctKeyVVV123456==; in {CONNECTION}; "
                        "key AzureStorageKeyUUU789, AzureAccountKeyTTT456, token sv=2022-11-02&sig=SasSigXYZ98765")
    for secret in ("AzureAcctKeyVVV123456", "AzureStorageKeyUUU789", "AzureAccountKeyTTT456", "SasSigXYZ98765"):
        assert secret not in said, said
    assert said.startswith("adlfs: bad key AccountKey=<hidden>")


def test_azure_credentials_in_a_spec_are_hidden_from_its_record_and_messages():
    cluster = {"kubernetes": {"env": {"AZURE_STORAGE_CONNECTION_STRING": CONNECTION,
                                      "AZURE_STORAGE_KEY": "AzureStorageKeyUUU789",
                                      "AzureAccountKey": "CamelCaseKeyQQQ321",
                                      "SETTINGS": "AccountName=acct;AccountKey=InnerKeyRRR654;x=1"}},
               "jobqueue": {"job_script_prologue": [
                   "export AZURE_STORAGE_CONNECTION_STRING='AccountName=acct;AccountKey=AzurePrologueKeyWWW=='",
                   f"export CONN='{SAS}'"]}}
    secrets = ("AzureAcctKeyVVV123456", "AzureStorageKeyUUU789", "CamelCaseKeyQQQ321", "InnerKeyRRR654",
               "AzurePrologueKeyWWW", "SasSigXYZ98765")
    found = redact.secrets_in({"cluster": cluster})
    for secret in secrets:
        assert any(secret in s for s in found), secret
    spec = JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"), "cluster": cluster})
    recorded = json.dumps(spec.redacted())
    assert [s for s in secrets if s in recorded] == [], recorded
    assert "AccountName=acct" in recorded and "export AZURE_STORAGE_CONNECTION_STRING=" in recorded
    assert [s for s in secrets if s in redact.scrub(json.dumps(cluster), found)] == []


def test_a_number_under_a_secret_name_is_a_secret():
    data = {"env": {"AWS_SECRET_ACCESS_KEY": 98765432109876, "API_TOKEN": 1.5e15, "N_WORKERS": 12345678,
                    "AUTH_ENABLED": True, "SHORT_TOKEN": 1234},
            "storage_options": {"block_size": 52428800, "secret": 11223344556677}}
    assert redact.secrets_in(data) == {"98765432109876", "1500000000000000.0", "11223344556677"}
    hidden = redact.hide_named_secrets(data)
    assert hidden["env"] == {"AWS_SECRET_ACCESS_KEY": redact.HIDE, "API_TOKEN": redact.HIDE,
                             "N_WORKERS": 12345678, "AUTH_ENABLED": True, "SHORT_TOKEN": 1234}


def test_a_numeric_secret_is_not_in_the_validation_error(tmp_path):
    spec = tmp_path / "int_env.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "y3", "input": {"url": "scene.tif"}, "model": {"method": "otsu"},
        "output": {"url": "y.zarr"},
        "cluster": {"kind": "kubernetes", "kubernetes": {"env": {"AWS_SECRET_ACCESS_KEY": 98765432109876}}}}))
    assert "AWS_SECRET_ACCESS_KEY: 98765432109876" in spec.read_text()  # an int, unquoted
    result = geoseg("validate", str(spec))
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    assert "cluster.kubernetes.env.AWS_SECRET_ACCESS_KEY" in said and "98765432109876" not in said, said


def test_the_path_of_a_credentials_file_is_no_secret(tmp_path, monkeypatch):
    keys = tmp_path / "projects_2024" / "keys"
    keys.mkdir(parents=True)
    (keys / "service-account.json").write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(keys / "service-account.json"))
    monkeypatch.setenv("MY_CREDENTIALS_FOLDER", str(keys))  # an existing folder, whatever its name
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "RealSecretValue42")
    output = f"wrote {tmp_path}/projects_2024/gac-out.zarr with key RealSecretValue42"
    assert redact.scrub(output) == f"wrote {tmp_path}/projects_2024/gac-out.zarr with key <hidden>"
    assert redact.env_secrets() >= {"RealSecretValue42"}
    assert not {str(keys), str(keys / "service-account.json")} & redact.env_secrets()


def test_a_credentials_file_path_named_as_one_is_no_secret_before_it_exists(tmp_path, monkeypatch):
    path = tmp_path / "projects_2024" / "keys" / "service-account.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(path.parent / "token"))
    assert redact.scrub(f"wrote {path.parent}/out.zarr") == f"wrote {path.parent}/out.zarr"
    monkeypatch.setenv("SOME_TOKEN_FILE", '{"private_key": "InlineKeyZZZ111"}')  # not a path: a secret
    assert "InlineKeyZZZ111" not in redact.scrub('{"private_key": "InlineKeyZZZ111"}')


def test_a_path_holding_a_colon_and_an_at_sign_is_no_secret(tmp_path):
    url = "s3://secbucket/scenes/2024-01-01T10:00:00/scene@10m.tif"
    port = "http://127.0.0.1:47140/secbucket/scenes/a@10m.tif"
    assert redact.url_secrets(url) == set() and redact.url_secrets(port) == set()
    assert redact.secrets_in({"input": {"url": url}, "inputs": {"urls": [port]}}) == set()
    assert redact.url_secrets("s3://KEY:SEC/RET@bucket/k?sig=SigValue1") == {"KEY:SEC/RET", "SEC/RET",
                                                                             "SigValue1"}
    assert redact.scrub(f"reading {url} failed") == f"reading {url} failed"
    assert redact.public_urls({"url": url, "note": f"from {port}."}) == {"url": url, "note": f"from {port}."}
    assert Path(redact.public_urls(url)).name == "scene@10m.tif"
