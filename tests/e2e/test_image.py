"""What the shipped image must not carry (issue #14): the build machine's certificates and the
packages that only alibi-detect's unused detectors need. Both are easy to bring back unnoticed: a
base image built with the host's CA bundle, or a requirements export that lets pip pull in
alibi-detect's full dependency tree again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import docker

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def image_exclude() -> list[str]:
    """The distributions the Makefile's IMAGE_EXCLUDE leaves out of the image."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^IMAGE_EXCLUDE\s*:=\s*(.+)$", text, re.M)
    assert match, "IMAGE_EXCLUDE not found in the Makefile"
    return match.group(1).split()


# Import names of the largest of them: none may be importable, whatever provides it.
HEAVY = {
    "cv2": "opencv-python",
    "numba": "numba",
    "llvmlite": "llvmlite",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "huggingface_hub": "huggingface-hub",
    "skimage": "scikit-image",
    "networkx": "networkx",
    "imageio": "imageio",
    "tifffile": "tifffile",
}
BUILD_CERT_ENV = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "UV_NATIVE_TLS")
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")  # CAs this machine adds to Debian's


def run_python(image: str, code: str) -> str:
    proc = docker("run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c", code)
    return proc.stdout.strip()


def pem_bodies(text: str) -> set[str]:
    """The base64 bodies of the certificates in a PEM text, whitespace removed."""
    bodies, current = set(), None
    for line in text.splitlines():
        if line.startswith("-----BEGIN CERTIFICATE"):
            current = []
        elif line.startswith("-----END CERTIFICATE") and current is not None:
            bodies.add("".join(current))
            current = None
        elif current is not None:
            current.append(line.strip())
    return bodies


def test_no_build_certificates_in_config_or_history(image):
    config = json.loads(docker("image", "inspect", image, "--format", "{{json .Config}}").stdout)
    env = dict(e.split("=", 1) for e in config.get("Env") or [])
    assert not set(BUILD_CERT_ENV) & set(env), f"certificate settings in the image's env: {env}"
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    for name in ("SSL_CERT_FILE", "PIP_CERT", "build-ca.crt"):
        assert name not in history, f"{name} in the image's layer history"


def test_ca_bundle_is_the_distributions_own(image):
    """Every CA the image trusts comes from its ca-certificates package (/usr/share/ca-certificates),
    none from this machine: neither the bundle nor any other file holds the host's extra CAs."""
    bundles = run_python(
        image,
        "import glob, json; print(json.dumps({"
        "'bundle': open('/etc/ssl/certs/ca-certificates.crt').read(),"
        "'package': ''.join(open(p).read() for p in glob.glob('/usr/share/ca-certificates/**/*.crt',"
        " recursive=True)),"
        "'build_ca': bool(glob.glob('/etc/ssl/build-ca*'))}))",
    )
    found = json.loads(bundles)
    trusted, packaged = pem_bodies(found["bundle"]), pem_bodies(found["package"])
    assert trusted and trusted <= packaged, f"{len(trusted - packaged)} CA(s) not from ca-certificates"
    assert not found["build_ca"]
    extra = set()
    for path in HOST_EXTRA_CAS.glob("*.crt"):
        extra |= pem_bodies(path.read_text())
    assert not extra & trusted, "a CA of the build machine is in the image's bundle"


def test_heavy_packages_absent_and_drift_detector_imports(image):
    out = run_python(
        image,
        "import importlib.util, importlib.metadata as md, json, sys\n"
        f"heavy = {image_exclude()!r}\n"
        f"mods = {sorted(HEAVY)!r}\n"
        "def dist(n):\n"
        "    try:\n"
        "        return md.version(n)\n"
        "    except md.PackageNotFoundError:\n"
        "        return None\n"
        "sys.path.insert(0, '/home/bentoml/bento/src')\n"
        "from monitoring.detector import tabular_drift_class\n"
        "cls = tabular_drift_class()\n"
        "print(json.dumps({'dists': {n: dist(n) for n in heavy},"
        " 'modules': {m: importlib.util.find_spec(m) is not None for m in mods},"
        " 'detector': cls.__module__ + '.' + cls.__name__,"
        " 'alibi_detect': md.version('alibi-detect')}))",
    )
    found = json.loads(out.splitlines()[-1])
    assert found["detector"] == "alibi_detect.cd.tabular.TabularDrift"
    assert found["alibi_detect"]
    assert not {n: v for n, v in found["dists"].items() if v}, found["dists"]
    assert not {m for m, present in found["modules"].items() if present}, found["modules"]


def test_no_compiler_and_no_installer_in_the_image(image):
    """BentoML's Debian template installed build-essential (526 MB) and uv into the shipped image;
    the two-stage build leaves both in the first stage."""
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "build-essential" not in history
    found = json.loads(
        run_python(
            image,
            "import json, shutil; print(json.dumps({'gcc': shutil.which('gcc'), 'uv': shutil.which('uv')}))",
        )
    )
    assert found == {"gcc": None, "uv": None}, found
