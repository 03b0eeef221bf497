"""MONAI Label's own client against a live `segloop serve`, through the calls 3D Slicer's module makes.

Slicer's MONAI Label module: Fetch Info (``/info/``) → Next Sample (``/activelearning``, then it
downloads ``/datastore/image``) → Run (``/infer``) → Submit Label (``PUT /datastore/label``, tag
``final``) → Train (``POST /train``) while it polls ``GET /train/?check_if_running=true``.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # the client imports cgi
    client_module = pytest.importorskip(
        "monailabel.client.client",
        reason="MONAI Label's client is not installed (make setup: pip install --no-deps monailabel)",
    )

import uvicorn

from segloop.core.volume import Volume
from segloop.io import read_volume, write_volume
from segloop.loop.users import create_user
from segloop.server import Settings, create_app
from segloop.synthetic import make_ct_phantom
from tests.conftest import make_phantom_project
from tests.loop.test_ranking import add_prediction, blur_block, confident, start_model

SHAPE = (24, 24, 12)
#: A 3-level 2D UNet with 4-16 features, one epoch of two steps: seconds on a CPU.
TINY_TRAINING = {
    "mode": "full",
    "device": "cpu",
    "epochs": 1,
    "steps_per_epoch": 2,
    "features": [4, 8, 16],
    "num_res_units": 1,
    "batch_size": 2,
    "num_threads": 1,
}


@pytest.fixture
def served(request, tmp_path: Path):
    """``(url, project)`` of a live server (a thread) over three phantoms; ``c1`` has a stored prediction.

    Indirect parameters are the server's `Settings` fields.
    """
    project = make_phantom_project(tmp_path, 3, SHAPE, labeled=(0,))
    truth = make_ct_phantom(SHAPE, seed=1).labels.array
    probabilities = blur_block(confident(truth, project.config.schema.ignore_index), 1, (slice(2, 8),) * 3)
    add_prediction(project, "c1", probabilities, model_id=start_model(project))
    app = create_app(project, Settings(**getattr(request, "param", {})))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", project
    server.should_exit = True
    thread.join(30)
    listener.close()


def wait_for_training(client, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while client.train_status(check_if_running=True) and time.monotonic() < deadline:
        time.sleep(0.5)
    return client.train_status()


@pytest.mark.slow  # the training job's process imports torch: about 15 s
def test_slicer_sequence_with_monai_labels_client(served, tmp_path: Path):
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("monai") is None:
        pytest.skip("training needs the engine extra (torch, MONAI)")
    url, project = served
    client = client_module.MONAILabelClient(url, tmpdir=str(tmp_path), client_id="ann")
    schema = project.config.schema

    # Fetch Info: the label names and values Slicer builds its segments from
    info = client.info()
    assert info["labels"] == {**{c.name: c.index for c in schema.classes}, "ignore": schema.ignore_index}
    assert "segloop" in info["models"] and list(info["trainers"]) == ["segloop"]

    # Next Sample: the most uncertain case, then its image as Slicer downloads it
    sample = client.next_sample("uncertainty", {})
    assert sample["id"] == "c1"
    [served_event] = project.list_events("served")
    assert served_event.actor == "ann"
    import requests

    image = requests.get(f"{url}/datastore/image?image=c1", timeout=30)
    image_file = tmp_path / sample["name"]
    image_file.write_bytes(image.content)
    assert read_volume(image_file).array.shape == SHAPE

    # Run: the model's label of the case
    [pseudo] = project.list_label_versions("c1")
    result_file, params = client.infer("segloop", "c1", {})
    assert params["label_names"] == {c.name: c.index for c in schema.classes}
    predicted = read_volume(Path(result_file))
    np.testing.assert_array_equal(predicted.array, project.read_labels(pseudo))

    # Submit Label: a corrected label map whose values follow /info/, saved as final
    corrected = predicted.array.copy()
    corrected[12:16, 12:16, 4:8] = info["labels"]["spleen"]
    corrected[0:3, 0:3, 0:3] = info["labels"]["ignore"]
    label_file = tmp_path / "corrected.nii.gz"
    write_volume(Volume(corrected, predicted.affine), label_file)
    segments = sorted(info["labels"], key=info["labels"].get)  # Slicer's segments, made from /info/
    names = [{"name": name, "idx": index} for index, name in enumerate(segments, start=1)]
    saved = client.save_label("c1", str(label_file), tag="final", params={"label_info": names})
    version = project.get_label_version(saved["version"])
    assert (version.source, version.author, version.params["based_on"]) == ("revised", "ann", pseudo.id)
    assert version.parent_id == pseudo.id and version.classes == schema.names
    np.testing.assert_array_equal(project.read_labels(version), corrected)
    assert "final" in client.datastore()["objects"]["c1"]["labels"]
    final = read_volume(Path(client.download_label("c1", "final")))
    np.testing.assert_array_equal(final.array, corrected)

    # Train: a training job of the project; its status as the module polls it
    started = client.train_start("segloop", TINY_TRAINING)
    assert started["status"] in ("RUNNING", "DONE")
    finished = wait_for_training(client)
    assert finished["status"] == "DONE", finished
    model = project.find_latest_model()
    assert model.id == int(finished["result"]["model"])
    assert set(model.train_case_ids) | set(model.val_case_ids) == {"c0", "c1"}
    assert client.info()["models"]["segloop"]["segloop_model"] == model.id

    assert client.train_stop() == {}  # nothing runs any more


@pytest.mark.parametrize("served", [{"require_sign_in": True}], indirect=True)
def test_slicer_sign_in_with_a_segloop_token(served, tmp_path: Path):
    url, project = served
    _, token = create_user(project, "ana")
    client = client_module.MONAILabelClient(url, tmpdir=str(tmp_path), client_id="bob")
    assert client.auth_enabled()
    with pytest.raises(client_module.MONAILabelClientException) as refused:
        client.info()
    assert refused.value.status_code == 401
    with pytest.raises(client_module.MONAILabelClientException):
        client.auth_token("ana", "not a token")
    client.update_auth(client.auth_token("ana", token))  # as Slicer's login dialog does
    assert client.auth_valid_token()
    assert client.next_sample("random", {})["id"] in {"c1", "c2"}
    [event] = project.list_events("served")
    assert event.actor == "ana"  # the token's user, not the client id


def test_two_anonymous_slicer_clients_save_on_the_heads_they_were_served(served, tmp_path: Path):
    """Each client's save is checked against its own Run; segment values follow label_info's order."""
    url, project = served
    ann, bob = (
        client_module.MONAILabelClient(url, tmpdir=str(tmp_path), client_id=n) for n in ("ann", "bob")
    )
    for client in (ann, bob):
        client.infer("segloop", "c1", {})  # both are served the stored prediction
    [pseudo] = project.list_label_versions("c1")
    schema = project.config.schema
    # Slicer's segments "background, spleen, liver": background is skipped, so the exported values are
    # spleen = 1 and liver = 2 while their idx are 2 and 3
    exported = np.zeros(SHAPE, np.uint8)
    exported[2:6, 2:6, 2:6] = 1
    exported[10:14, 10:14, 4:8] = 2
    label_file = tmp_path / "exported.nii.gz"
    write_volume(Volume(exported, project.get_case("c1").affine), label_file)
    label_info = [{"name": "spleen", "idx": 2}, {"name": "liver", "idx": 3}]
    saved = bob.save_label("c1", str(label_file), tag="final", params={"label_info": label_info})
    version = project.get_label_version(saved["version"])
    assert (version.author, version.parent_id, version.classes) == ("bob", pseudo.id, ("liver", "spleen"))
    expected = np.choose(exported, [0, schema.index_of("spleen"), schema.index_of("liver")])
    assert np.array_equal(project.read_labels(version), expected)
    bob.download_label("c1", "final")  # MONAI Label's client names nobody here: ann keeps her head
    exported[0:2, 0:2, 0:2] = 2  # ann's correction differs from bob's
    ann_file = write_volume(Volume(exported, project.get_case("c1").affine), tmp_path / "ann.nii.gz")
    with pytest.raises(client_module.MONAILabelClientException) as refused:
        ann.save_label("c1", str(ann_file), tag="final", params={"label_info": label_info})
    assert "Status: 409" in refused.value.msg and "revised by bob" in refused.value.msg
    assert project.find_head("c1") == version.id
