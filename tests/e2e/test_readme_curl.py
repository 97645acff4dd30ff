"""The README's curl examples, run as a new user would, against the app served by `python -m catalog serve`."""
import subprocess

from tests.integration.test_readme import code_blocks


def test_readme_curl_examples_work(served):
    blocks = [b for b in code_blocks("bash", "## HTTP API") if "curl" in b]
    assert len(blocks) == 1
    script = blocks[0]
    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env={**served.env, "BASE": served.base},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr + run.stdout
    out = run.stdout
    assert '"status": "applied"' in out and '"matched": 1' in out  # the operation applied, the delete matched
    assert '"name": "hammer"' in out and '"name": "saw"' in out
    assert out.rstrip().endswith("az-table-catalog")
    assert run.stdout.count('"operation"') >= 3
