#!/usr/bin/env python3
"""Builds the fixture models in fixtures/models/ with real tools. Run by hand; outputs are committed.

    python3 -m venv /tmp/fixenv
    /tmp/fixenv/bin/pip install scikit-learn skl2onnx onnx onnxruntime==1.32.0 mlflow-skinny pandas
    /tmp/fixenv/bin/python scripts/make-fixtures.py            # every fixture
    /tmp/fixenv/bin/python scripts/make-fixtures.py lifecycle  # only the lifecycle ones

The lifecycle fixtures are derived from the committed wine classifier, so they can be made
again without changing the models the golden logs name by hash.

Every model takes one input tensor per feature column ([N, 1] each), the way H2O scorers see
columns, and its expected outputs on a few rows come from the onnxruntime Python package.
"""
import json
import os
import shutil
import tempfile
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_wine
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "models")


def column_name(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def convert(model, columns, options=None):
    types = [(c, FloatTensorType([None, 1])) for c in columns]
    onx = convert_sklearn(model, initial_types=types, options=options, target_opset=17)
    return onx


def expected(path, columns, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {c: x[:, i : i + 1].astype(np.float32) for i, c in enumerate(columns)}
    outs = sess.run(None, feeds)
    return {o.name: v.tolist() for o, v in zip(sess.get_outputs(), outs)}


def save(onx, name, columns, x, extra):
    path = os.path.join(OUT, name)
    onnx.save_model(onx, path)
    rows = x[:5]
    sample = {
        "model": name,
        "fields": columns,
        "rows": [[repr(float(np.float32(v))) for v in r] for r in rows],
        "outputs": expected(path, columns, rows),
        **extra,
    }
    with open(path.replace(".onnx", ".expected.json"), "w") as f:
        json.dump(sample, f, indent=1)
    return path


def main():
    os.makedirs(OUT, exist_ok=True)

    wine = load_wine()
    wine_cols = [column_name(c) for c in wine.feature_names]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(wine.data, wine.target)
    onx = convert(clf, wine_cols, options={id(clf): {"zipmap": False}})
    wine_path = save(onx, "wine_classifier.onnx", wine_cols, wine.data, {"classes": [0, 1, 2]})

    diabetes = load_diabetes()
    reg_cols = [column_name(c) for c in diabetes.feature_names]
    # The scaler changes no split (trees are scale-invariant); it lets skl2onnx take one input per column.
    reg = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=100, max_depth=4, random_state=7))
    reg.fit(diabetes.data, diabetes.target)
    save(convert(reg, reg_cols), "diabetes_forest.onnx", reg_cols, diabetes.data, {})

    import mlflow.onnx
    from mlflow.models import infer_signature
    import pandas as pd

    frame = pd.DataFrame(wine.data.astype(np.float32), columns=wine_cols)
    probs = clf.predict_proba(wine.data).astype(np.float32)
    signature = infer_signature(
        frame, pd.DataFrame(probs, columns=[f"class.{c}" for c in wine.target_names])
    )
    work = tempfile.mkdtemp()
    model_dir = os.path.join(work, "wine_mlflow")
    mlflow.onnx.save_model(onnx.load(wine_path), model_dir, signature=signature)
    zpath = os.path.join(OUT, "wine_mlflow.zip")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for root, _, files in os.walk(model_dir):
            for f in sorted(files):
                full = os.path.join(root, f)
                arc = os.path.relpath(full, work)
                info = zipfile.ZipInfo(arc, date_time=(2026, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as src:
                    z.writestr(info, src.read())
    shutil.rmtree(work)


def lifecycle():
    """A second wine model (another regularization, so its probabilities differ) for updates,
    rollbacks and A/B splits, and a challenger that loads and scores one row but fails on any
    run of more: the wine classifier with its first input reshaped to [1, 1]."""
    import sys

    from onnx import helper, numpy_helper

    wine = load_wine()
    wine_cols = [column_name(c) for c in wine.feature_names]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000))
    clf.fit(wine.data, wine.target)
    onx = convert(clf, wine_cols, options={id(clf): {"zipmap": False}})
    save(onx, "wine_classifier_v2.onnx", wine_cols, wine.data, {"classes": [0, 1, 2]})

    model = onnx.load(os.path.join(OUT, "wine_classifier.onnx"))
    first = model.graph.input[0].name
    reshaped = first + "_one_row"
    for node in model.graph.node:
        node.input[:] = [reshaped if i == first else i for i in node.input]
    shape = numpy_helper.from_array(np.array([1, 1], dtype=np.int64), name="one_row_shape")
    model.graph.initializer.append(shape)
    model.graph.node.insert(0, helper.make_node("Reshape", [first, "one_row_shape"], [reshaped]))
    onnx.checker.check_model(model)
    path = os.path.join(OUT, "wine_challenger_one_row.onnx")
    onnx.save_model(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = wine.data.astype(np.float32)
    feeds = lambda n: {c: x[:n, i : i + 1] for i, c in enumerate(wine_cols)}
    sess.run(None, feeds(1))
    try:
        sess.run(None, feeds(2))
    except Exception:  # the point of this model
        pass
    else:
        sys.exit("the one-row challenger scored two rows")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["lifecycle"]:
        lifecycle()
    else:
        main()
        lifecycle()
