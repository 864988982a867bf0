import subprocess
import sys


def test_import_seedr1_makes_torchvision_usable():
    # A fresh interpreter: seedr1 first, then torchvision and the transforms transformers' video processor uses.
    code = (
        "import seedr1, torch, torchvision\n"
        "from torchvision.transforms.v2 import functional as F\n"
        "from seedr1 import torchvision_compat as c\n"
        "x = F.resize(torch.zeros(3, 8, 8), [4, 4])\n"
        "from transformers import Qwen2VLVideoProcessor\n"
        "print(c.apply(), tuple(x.shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    mode, shape = out.stdout.strip().split(" ", 1)
    assert mode in ("compiled", "declared")
    assert shape == "(3, 4, 4)"


def test_hook_does_not_import_torch_eagerly():
    code = "import sys, seedr1; print('torch' in sys.modules, 'torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_processes_that_never_import_seedr1():
    # vLLM inspects model classes in a bare subprocess; setup.sh's .pth applies the fix there too.
    out = subprocess.run([sys.executable, "-c", "import torchvision; print('ok')"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
