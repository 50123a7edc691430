"""scripts/run.sh (``make run``), checked by reading it: nothing it starts may reach real AWS."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_SH = (ROOT / "scripts" / "run.sh").read_text()
SETTINGS_SOURCE = (ROOT / "portal" / "settings.py").read_text()


def _aws_endpoint_variables() -> set[str]:
    """Every AWS_<service>_ENDPOINT_URL portal/settings.py reads, however it reads it."""
    return set(re.findall(r'"(AWS_[A-Z0-9]+_ENDPOINT_URL)"', SETTINGS_SOURCE))


def test_it_finds_the_kms_and_sts_endpoints_in_the_settings():
    assert {"AWS_KMS_ENDPOINT_URL", "AWS_STS_ENDPOINT_URL"} <= _aws_endpoint_variables()


def test_it_points_every_aws_endpoint_the_settings_read_at_the_local_emulator():
    exported = dict(re.findall(r'^export (AWS_[A-Z0-9]+_ENDPOINT_URL)="\$\{\1:-(.+?)\}"$', RUN_SH, re.M))
    for variable in _aws_endpoint_variables():
        assert exported.get(variable) == "$LOCAL_EMULATOR", f"make run leaves {variable} at real AWS"
    assert 'LOCAL_EMULATOR="http://127.0.0.1:${KMS_PORT}"' in RUN_SH
    # No shared config or instance metadata: only the credentials given to make run.
    assert "export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true" in RUN_SH


def test_it_documents_every_aws_endpoint_in_env_example_and_the_readme():
    env_example = (ROOT / "docker" / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for variable in _aws_endpoint_variables():
        assert re.search(rf"^{variable}=", env_example, re.M), variable
        assert f"| `{variable}` |" in readme, variable
    assert "customer_demo --role" in readme and "PLATFORM_AWS_PRINCIPAL_ARN=" in readme
