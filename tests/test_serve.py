"""`serve`: the HTTP API answers what `predict` answers for the same photo files, refuses bad
uploads with a 4xx and a JSON reason and keeps serving, and its page replaces LitServe's `GET /`.
The fast tests run the server in process (LitServe's own test harness and FastAPI's TestClient);
the slow ones start the real command on a free port of 127.0.0.1 and drive a headless Chromium."""

import base64
import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COMMAND, FittedRun, assert_user_error, flat, predictions_file
from fastapi.testclient import TestClient
from litserve.utils import wrap_litserve_start
from PIL import Image
from starlette.datastructures import FormData, UploadFile
from test_photos import known_image, product_photo

from fashion_lightning.cli.main import cli_main
from fashion_lightning.data import idx, photos
from fashion_lightning.deploy.runtimes import ModelFile
from fashion_lightning.deploy.serve import build_server
from fashion_lightning.deploy.serve_api import PhotoClassifierAPI, Refusal
from fashion_lightning.evaluation.inference import ProbabilityModel
from fashion_lightning.training.checkpoint import load_model

MAX_UPLOAD_MB = 0.05  # small, so that the over-limit uploads stay small too
N_REAL = 6  # real test images sent as photo files


@pytest.fixture(scope="module")
def checkpoint(cnn_fit: FittedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny CNN (cnn_fast, validated every epoch, so its checkpoint holds a
    temperature and an ood threshold), copied for this file's tests (predict writes beside it)."""
    return cnn_fit.moved_to(tmp_path_factory.mktemp("serve_fit")).best


@pytest.fixture(scope="module")
def photo_dir(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real test images as files: stored-style PNGs, and one product-style JPEG photo."""
    folder = tmp_path_factory.mktemp("serve_photos")
    images = idx.load_split(real_data_dir, "test")[0][:N_REAL]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"real{i}.png")
    product_photo(images[0], "rgb").save(folder / "product.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> Iterator[TestClient]:
    """The server in process: LitServe's test harness starts its inference worker."""
    server = build_server(ModelFile(str(checkpoint), "checkpoint"), max_upload_mb=MAX_UPLOAD_MB)
    with wrap_litserve_start(server), TestClient(server.app) as test_client:
        wait_until_healthy(test_client, timeout=120)
        yield test_client


def wait_until_healthy(
    http, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Poll `GET /health` until it answers 200 (the inference worker has loaded the model)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            assert process.poll() is None, f"serve exited early:\n{log.read_text()}"
        try:
            if http.get("/health", timeout=5).status_code == 200:
                return
        except httpx2.TransportError:
            pass  # not listening yet
        time.sleep(0.25)
    raise AssertionError(f"the server was not healthy within {timeout} s")


def post_photo(client, path: Path, **fields: str) -> httpx2.Response:
    with path.open("rb") as file:
        return client.post("/predict", files={"file": (path.name, file)}, data=fields, timeout=60)


def expected_answers(checkpoint: Path, folder: Path) -> tuple[dict, dict]:
    """What the model says of each photo, computed directly: the reference for the live server.
    Probabilities and ood scores by file name."""
    found = photos.load_photos(str(folder))
    model = ProbabilityModel(load_model(checkpoint))
    with torch.no_grad():
        probabilities, scores = model(torch.from_numpy(found.images)[:, None])
    names = [Path(f).name for f in found.files]
    return dict(zip(names, probabilities.numpy())), dict(zip(names, scores.tolist()))


def test_answers_equal_predict_for_the_same_photo_files(
    client, checkpoint: Path, photo_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = cli_main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_path={photo_dir}",
            "--trainer.precision=32-true",
            "--trainer.enable_progress_bar=false",
        ]
    )
    table = pd.read_csv(predictions_file(cli), keep_default_na=False)
    assert len(table) == N_REAL + 1 and (table["error"] == "").all()
    names = list(idx.CLASS_NAMES)
    for _, row in table.iterrows():
        answer = post_photo(client, Path(row["file"]))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["class"] == row["class"]
        assert list(body["probabilities"]) == names
        got = np.array(list(body["probabilities"].values()))
        assert np.abs(got - row[names].to_numpy(dtype=float)).max() < 1e-5
        assert body["confidence"] == pytest.approx(got.max())
        assert body["ood_score"] == pytest.approx(row["ood_score"], rel=1e-4)
        assert body["verdict"] == row["verdict"]
        assert "model_input_png" not in body  # only when asked for


def test_the_image_the_model_saw_comes_back_when_asked(client, photo_dir: Path) -> None:
    body = post_photo(client, photo_dir / "product.jpg", return_image="1").json()
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["model_input_png"]))))
    expected = photos.to_fashion_mnist(photos.read_photo(photo_dir / "product.jpg"))
    assert seen.shape == (28, 28) and np.array_equal(seen, expected)


def write_bad_uploads(folder: Path) -> dict[str, tuple[int, str]]:
    """Uploads the server must refuse: file name -> (status, words its `detail` must hold)."""
    good = folder / "good.png"
    product_photo(known_image(), "rgb").save(good)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "broken.png").write_bytes(good.read_bytes()[:200])
    Image.new("RGB", (50, 40), (248, 246, 240)).save(folder / "blank.png")
    limit = round(MAX_UPLOAD_MB * 1e6)
    (folder / "just_over.png").write_bytes(good.read_bytes() + bytes(limit))  # our check
    (folder / "far_over.png").write_bytes(bytes(3 * limit))  # LitServe's, before reading it all
    return {
        "empty.png": (400, "empty"),
        "notes.jpg": (422, "not an image"),
        "broken.png": (422, "broken"),
        "blank.png": (422, "uniform"),
        "just_over.png": (413, "limit of 0.05 MB"),
        "far_over.png": (413, "limit of 0.05 MB (serve --max_upload_mb)"),
    }


def test_bad_uploads_get_a_4xx_with_a_json_reason_and_the_server_keeps_serving(
    client, tmp_path: Path
) -> None:
    for name, (status, words) in write_bad_uploads(tmp_path).items():
        answer = post_photo(client, tmp_path / name)
        assert answer.status_code == status, (name, answer.text)
        assert words in answer.json()["detail"], (name, answer.json())
        assert post_photo(client, tmp_path / "good.png").status_code == 200  # still serving


@pytest.mark.parametrize(
    ("request_options", "status"),
    [
        ({"files": {"photo": ("a.png", b"...")}}, 400),  # a form without the field `file`
        ({"content": b"\xff\xd8 raw JPEG bytes", "headers": {"content-type": "image/jpeg"}}, 415),
        ({"json": {"file": "a.png"}}, 415),
    ],
)
def test_a_request_without_the_file_field_is_told_its_name(client, request_options, status) -> None:
    answer = client.post("/predict", **request_options)
    assert answer.status_code == status and "`file`" in answer.json()["detail"]


def test_health_and_the_page_replace_litserves_index(client) -> None:
    assert client.get("/health").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "litserve running" not in page.text
    assert 'id="file"' in page.text and "{{" not in page.text  # the limit is filled in
    index_routes = [r for r in client.app.router.routes if getattr(r, "path", None) == "/"]
    assert len(index_routes) == 1  # replaced, not shadowed
    # Self-contained: nothing loaded from another origin (no CDN, fonts, scripts or styles).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(""", page.text)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--ckpt_path=missing.ckpt"], ["missing.ckpt", "does not exist"]),
        (["--ckpt_path=x.ckpt", "--port=80"], ["port", "80", "1024"]),
        (["--ckpt_path=x.ckpt", "--host=192.168.1.5"], ["host", "192.168.1.5", "127.0.0.1"]),
        (["--ckpt_path=x.ckpt", "--workers=0"], ["workers", "0"]),
    ],
)
def test_serve_option_mistakes_are_one_paragraph(options, words, capsys, run_dir) -> None:
    assert_user_error(["serve", *options], capsys, *words)


def test_a_port_in_use_is_one_paragraph(checkpoint: Path, capsys, run_dir) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", f"--ckpt_path={checkpoint}", f"--port={port}"]
        assert_user_error(args, capsys, f"--port {port}")


# --- A real server: the command itself, on a free port of this machine only --------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(checkpoint: Path, tmp_path_factory) -> Iterator[str]:
    """`python -m fashion_lightning serve` in its own process group on 127.0.0.1; its URL once
    /health answers 200. Stopped as systemd or Docker stop it, with SIGTERM to the main process:
    it must stop its worker processes too, and quietly."""
    port, log = free_port(), tmp_path_factory.mktemp("serve_log") / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                *COMMAND,
                "serve",
                f"--ckpt_path={checkpoint}",
                f"--port={port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx2.Client(base_url=url) as http:
            wait_until_healthy(http, timeout=120, process=process, log=log)
        yield url
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
        assert group_ends(process.pid, timeout=15), "serve left processes behind"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def group_ends(pgid: int, timeout: float) -> bool:
    """Whether every process of the group `pgid` is gone within `timeout` seconds (the resource
    tracker and multiprocessing's manager outlive the main process by a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow  # a real server process: about half a minute on 2 cores
def test_200_requests_8_at_a_time_are_all_answered_correctly(
    live_server: str, checkpoint: Path, photo_dir: Path
) -> None:
    expected = expected_answers(checkpoint, photo_dir)[0]
    files = sorted(photo_dir.iterdir())
    jobs = [files[i % len(files)] for i in range(200)]

    def ask(path: Path) -> tuple[str, dict]:
        with httpx2.Client(base_url=live_server, timeout=60) as http:
            answer = post_photo(http, path)
        assert answer.status_code == 200, answer.text
        return path.name, answer.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, jobs, timeout=300))
    assert len(answers) == 200
    for name, body in answers:
        got = np.array(list(body["probabilities"].values()))
        assert np.abs(got - expected[name]).max() < 1e-5, name
        assert body["class"] == idx.CLASS_NAMES[int(expected[name].argmax())]


CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser(tmp_path: Path):
    """Debian's headless Chromium driven by selenium through Debian's chromedriver."""
    from selenium import webdriver

    driver_path, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    if not (driver_path and chromium):
        pytest.fail(
            "The browser test needs Debian's chromium and chromium-driver: run `make test-slow` "
            "(it installs them) or apt-get install chromium chromium-driver."
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    fresh_profile = f"--user-data-dir={tmp_path / 'chromium'}"
    for flag in [*CHROME_FLAGS, fresh_profile, "--window-size=1000,720"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.slow  # a real server and a real browser
def test_the_page_shows_the_class_of_a_chosen_photo(
    live_server: str, browser, checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = photo_dir / "product.jpg"
    probabilities, ood_scores = expected_answers(checkpoint, photo_dir)
    wanted = idx.CLASS_NAMES[int(probabilities[photo.name].argmax())]
    clothing = not ood_scores[photo.name] > 1  # the tiny model's verdict, whichever it is
    (tmp_path / "notes.jpg").write_text("not an image")
    browser.get(f"{live_server}/")
    chooser = browser.find_element(By.ID, "file")
    chooser.send_keys(str(tmp_path / "notes.jpg"))  # the server's reason is shown, in red
    status = WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.CSS_SELECTOR, "#status.error").text or None
    )
    assert "not an image" in status and not browser.find_element(By.ID, "result").is_displayed()
    chooser.send_keys(str(photo))  # no other click
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "result").is_displayed())
    shown = browser.find_element(By.ID, "class").text
    verdict_shown = browser.find_element(By.ID, "verdict").is_displayed()
    assert (shown, verdict_shown) == ((wanted, False) if clothing else ("", True))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars .bar")) == len(idx.CLASS_NAMES)
    assert browser.execute_script("return document.getElementById('seen').naturalWidth") == 28
    assert browser.execute_script("return document.getElementById('photo').naturalWidth") > 28
    screenshot = tmp_path / "serve_page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 0


@pytest.mark.slow  # a real server and a real browser
def test_the_page_says_not_clothing_for_a_cat_photo(
    live_server: str, browser, checkpoint: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from skimage.data import chelsea  # a cat, bundled with scikit-image

    cat = tmp_path / "cat.jpg"
    Image.fromarray(chelsea()).save(cat, quality=90)
    assert expected_answers(checkpoint, tmp_path)[1]["cat.jpg"] > 1  # the model's own verdict
    browser.get(f"{live_server}/")
    browser.find_element(By.ID, "file").send_keys(str(cat))
    verdict = WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.ID, "verdict").is_displayed() or None
    )
    assert verdict and "does not look like a clothing photo" in flat(
        browser.find_element(By.ID, "verdict").text
    )
    assert not browser.find_element(By.ID, "answer").is_displayed()  # no winner
    assert browser.find_elements(By.CSS_SELECTOR, "#bars-box.ood .bar")  # greyed guesses


@contextmanager
def running_serve(options: list[str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m fashion_lightning serve OPTIONS` in its own process group on a free port of
    127.0.0.1, and its URL once /health answers 200; whatever is left of the group is killed on
    the way out."""
    port = free_port()
    command = [sys.executable, "-m", "fashion_lightning", "serve", *options, f"--port={port}"]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=url) as http:
            wait_until_healthy(http, timeout=120, process=process, log=log)
        yield process, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.slow  # a real server's process group
def test_ctrl_c_in_a_terminal_stops_serve_quietly(checkpoint: Path, tmp_path: Path) -> None:
    """A terminal's Ctrl+C sends SIGINT to the whole process group, the workers included."""
    log = tmp_path / "serve.log"
    with running_serve([f"--ckpt_path={checkpoint}", "--workers=2"], log) as (process, _):
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        assert group_ends(process.pid, timeout=15), "serve left processes behind"
    assert "Traceback" not in log.read_text(), log.read_text()


# --- Batching, and serving an exported ONNX model -------------------------------------------


def form(path: Path, **fields: str) -> FormData:
    """A parsed multipart form holding `path` as the field `file` (and any other `fields`), as
    LitServe hands it over."""
    upload = UploadFile(io.BytesIO(path.read_bytes()), filename=path.name)
    return FormData({"file": upload, **fields})


def test_one_batch_answers_each_photo_as_alone_and_refuses_only_the_bad_one(
    checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    api = PhotoClassifierAPI(ModelFile(str(checkpoint), "checkpoint"), 10**6, os.getpid(), 8)
    api.setup("cpu")
    (tmp_path / "notes.jpg").write_text("not an image")
    files = sorted(photo_dir.iterdir())
    files.insert(2, tmp_path / "notes.jpg")
    batch = api.predict([api.decode_request(form(f)) for f in files])  # one forward pass
    assert len(batch) == len(files)
    for path, answer in zip(files, batch):
        alone = api.predict(api.decode_request(form(path)))
        if path.name == "notes.jpg":
            assert isinstance(answer, Refusal) and answer == alone and answer.status == 422
            continue
        got, want = answer.outputs["probabilities"], alone.outputs["probabilities"]
        assert got.shape == (10,) and np.abs(got - want).max() < 1e-6
    asked = api.predict([api.decode_request(form(files[0], return_image="1"))])[0]  # the page's
    body = api.encode_response(asked)  # the JSON a client gets, as a worker encodes it
    assert body["class"] == idx.CLASS_NAMES[int(asked.outputs["probabilities"].argmax())]
    seen = Image.open(io.BytesIO(base64.b64decode(body["model_input_png"])))
    assert seen.size == (28, 28)  # the image the model saw, for the page
    refused = api.encode_response(batch[2])
    assert refused.status_code == 422 and b"not an image" in refused.body


@pytest.fixture(scope="module")
def onnx_file(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint's float32 ONNX export."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return cli_main(["export", f"--ckpt_path={checkpoint}", f"--out={out}"])


@pytest.mark.slow  # an ONNX export and a second server
def test_an_onnx_export_serves_the_checkpoints_answers(
    onnx_file: Path, checkpoint: Path, photo_dir: Path
) -> None:
    expected = expected_answers(checkpoint, photo_dir)[0]
    server = build_server(ModelFile(str(onnx_file), "onnx"), max_batch_size=4)
    with wrap_litserve_start(server), TestClient(server.app) as http:
        wait_until_healthy(http, timeout=120)
        with ThreadPoolExecutor(4) as pool:  # together, so that some share a batch
            answers = list(pool.map(lambda f: (f.name, post_photo(http, f)), photo_dir.iterdir()))
    assert len(answers) == N_REAL + 1
    for name, answer in answers:
        assert answer.status_code == 200, answer.text
        got = np.array(list(answer.json()["probabilities"].values()))
        assert np.abs(got - expected[name]).max() < 1e-5, name


def write_wrong_onnx(path: Path) -> Path:
    """A valid ONNX model that `export` did not write: float32 (N, 784) in, the same out."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 784])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other", [x], [y])
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--ckpt_path=CKPT", "--model=ONNX"], ["both --ckpt_path and --model", "name one"]),
        ([], ["neither --ckpt_path nor --model"]),
        (["--model=missing.onnx"], ["--model missing.onnx", "does not exist", "export"]),
        (["--model=NOTES"], ["not an ONNX model", "export"]),
        (["--model=WRONG"], ["not one `export` wrote", "float", "uint8"]),
    ],
)
def test_serve_model_mistakes_are_one_paragraph(
    options, words, checkpoint: Path, onnx_file: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "notes.onnx").write_text("not a model")
    files = {
        "CKPT": checkpoint,
        "ONNX": onnx_file,
        "NOTES": tmp_path / "notes.onnx",
        "WRONG": write_wrong_onnx(tmp_path / "wrong.onnx"),
    }
    options = [re.sub("|".join(files), lambda m: str(files[m[0]]), o) for o in options]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["serve", *options])
    error = flat(capsys.readouterr().err)
    assert exit_info.value.code == 2 and "Traceback" not in error
    for word in words:
        assert word in error, error


@pytest.mark.slow  # an ONNX export and a fresh interpreter
def test_serving_an_onnx_file_loads_no_torch_in_its_process(onnx_file: Path) -> None:
    """The command's own process: `__main__`, the command registry, serve, the worker's API and
    the model opened by onnxruntime import neither torch nor Lightning (the live test below
    checks the worker processes)."""
    code = """if True:
        import sys
        import fashion_lightning.__main__
        import fashion_lightning.deploy.serve_api, fashion_lightning.deploy.runtimes
        from fashion_lightning.cli.commands import COMMANDS
        COMMANDS["serve"].load()
        fashion_lightning.deploy.runtimes.ModelFile(sys.argv[1], "onnx").open("cpu")(
            __import__("numpy").zeros((3, 1, 28, 28), "uint8")
        )
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning")))
    """
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code, str(onnx_file)], cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def mapped_libraries(pgid: int) -> dict[int, str]:
    """Every process of the group `pgid` and the shared libraries mapped into it."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                found[int(stat.parent.name)] = (stat.parent / "maps").read_text()
    return found


@pytest.mark.slow  # a real server process
def test_a_served_onnx_model_answers_and_no_serving_process_holds_torch(
    onnx_file: Path, checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    with running_serve([f"--model={onnx_file}"], tmp_path / "server.log") as (process, url):
        with httpx2.Client(base_url=url, timeout=60) as http:
            answer = post_photo(http, photo_dir / "product.jpg")
        assert answer.status_code == 200, answer.text
        expected = expected_answers(checkpoint, photo_dir)[0]["product.jpg"]
        got = np.array(list(answer.json()["probabilities"].values()))
        assert np.abs(got - expected).max() < 1e-5
        processes = mapped_libraries(process.pid)  # main, manager, HTTP server, worker
        assert len(processes) >= 4, processes.keys()
        assert any("libonnxruntime" in maps for maps in processes.values())  # the worker's
        holding = [pid for pid, maps in processes.items() if "libtorch" in maps]
        assert not holding, f"processes {holding} of serve --model loaded torch"


@pytest.mark.slow  # a real server process, killed
def test_a_sigkilled_serve_leaves_no_process_and_frees_its_port(
    onnx_file: Path, tmp_path: Path
) -> None:
    with running_serve([f"--model={onnx_file}", "--workers=2"], tmp_path / "log") as (proc, url):
        assert len(mapped_libraries(proc.pid)) >= 5  # main, manager, 2 HTTP servers, 2 workers
        proc.kill()  # SIGKILL to the main process only, not to its group
        proc.wait(timeout=10)
        assert group_ends(proc.pid, timeout=5), f"left alive: {list(mapped_libraries(proc.pid))}"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))  # the port is free again
