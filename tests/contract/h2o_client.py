"""The real H2O MLOps scoring client against a running Provenant scorer.

Usage: h2o_client.py BASE_URL ADMIN_TOKEN DEPLOYMENT_ID

Scores the fixture rows through `h2o_mlops_scoring_client.score_data_frame` on the open demo
deployment and on a passphrase-protected deployment of the same model, and checks every
probability against the `onnxruntime` Python package on the same rows (max abs diff <= 1e-6).
"""
import json
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd
import requests
import h2o_mlops_scoring_client as client

base, token, deployment = sys.argv[1:4]
expected = json.load(open("fixtures/models/wine_classifier.expected.json"))
columns = expected["fields"]
# More rows than the fixture holds: the fixture rows scaled, for several mini batches.
base_rows = np.array([[float(v) for v in r] for r in expected["rows"]])
data = np.vstack([base_rows * (1 + k / 50) for k in range(40)])
frame = pd.DataFrame(data, columns=columns)
frame.insert(0, "ID", [f"row-{i}" for i in range(len(frame))])

session = ort.InferenceSession("fixtures/models/wine_classifier.onnx", providers=["CPUExecutionProvider"])
feeds = {c: frame[c].to_numpy(dtype=np.float32).reshape(-1, 1) for c in columns}
reference = session.run(["probabilities"], feeds)[0]


def check(url, passphrase=None):
    scored = client.score_data_frame(
        mlops_endpoint_url=url, id_column="ID", data_frame=frame, cpus=2, mini_batch_size=37,
        passphrase=passphrase,
    )
    assert len(scored) == len(frame), f"{len(scored)} rows for {len(frame)}"
    scored = scored.set_index("ID").loc[frame["ID"]]
    got = scored[[f"cultivar.{k}" for k in range(3)]].to_numpy(dtype=np.float64)
    diff = float(np.max(np.abs(got - reference.astype(np.float64))))
    assert diff <= 1e-6, f"max abs diff {diff}"
    print(f"{url}: {len(scored)} rows, max abs diff vs onnxruntime {diff:.3g}")


check(f"{base}/{deployment}/model/score")

# A passphrase-protected deployment of the same model version.
auth = {"Authorization": f"Bearer {token}"}
demo = requests.get(f"{base}/api/v1/deployments/{deployment}", headers=auth).json()["spec"]
passphrase = "contract test passphrase"
r = requests.post(
    f"{base}/api/v1/deployments",
    headers=auth,
    json={
        "model_id": demo["model_id"], "version": demo["version"], "environment": "DEV",
        "security": {"mode": "passphrase", "passphrase": passphrase},
    },
)
assert r.status_code == 201, r.text
guarded = r.json()["data"]["deployment_id"]
check(f"{base}/{guarded}/model/score", passphrase)
try:
    client.score_data_frame(mlops_endpoint_url=f"{base}/{guarded}/model/score", id_column="ID", data_frame=frame)
    raise AssertionError("scored without the passphrase")
except requests.exceptions.HTTPError as e:
    assert e.response.status_code == 401, e
print("1 passed, 0 failed")
