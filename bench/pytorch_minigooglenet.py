"""PyTorch reference for bench:engine: the same MiniGoogLeNet, fp32, timed on the same GPU in the same run.

    python3 bench/pytorch_minigooglenet.py                       # batch 64 and 256, both modes, a table
    python3 bench/pytorch_minigooglenet.py --batch 64 --json     # one JSON line per (batch, mode)
    python3 bench/pytorch_minigooglenet.py --allow-tf32          # TensorFloat-32 convolutions (not fp32)
    OMP_NUM_THREADS=1 python3 bench/pytorch_minigooglenet.py --device cpu --batch 8 --steps 2 --warmup 1
                                                                 # a smoke test without a GPU; its timings mean nothing

The model is src/model/minigooglenet.ts's: conv modules Conv2d(bias) -> BatchNorm2d -> ReLU, with Keras'
BatchNormalization defaults (epsilon 1e-3, momentum 0.99, which is momentum 0.01 in PyTorch's convention,
where momentum weighs the new batch), inception and downsample modules as the tutorial builds them, then
whole-map average pooling, dropout 0.5, a dense layer. 1,656,250 parameters for 32x32x3 images and 10
classes, counted as Keras does (BatchNorm's running mean and variance included); the script checks it.

Two modes, each with its own JSON line:
  train   forward, backward and an SGD-with-momentum update, the batch already on the GPU: the usual
          PyTorch training loop.
  worker  what bench:engine times for one trainpool worker: the batch copied from (pinned) host memory,
          forward, backward, and every gradient copied back to the host as one flat float32 vector; no
          update (the coordinator applies updates).
Differs from Keras: the loss is CrossEntropyLoss on logits (log-softmax fused) instead of categorical
cross-entropy on softmax probabilities; the same function of the weights up to Keras' 1e-7 clipping.

Timing: cudnn.benchmark on, `--warmup` untimed steps (autotuning, allocator warm-up), then `--steps`
steps between two torch.cuda.synchronize() calls. TF32 is off unless --allow-tf32: PyTorch enables it
for cuDNN convolutions by default, which would not be fp32.

--device cpu runs the same steps on the CPU, for checking the script where there is no GPU: no pinned
memory, no synchronization, no cuDNN or TF32 settings; `device` in the JSON is the CPU's name.
"""
import argparse
import json
import platform
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

EXPECTED_PARAMS = 1_656_250
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.01  # Keras momentum 0.99: moving = 0.99 * moving + 0.01 * batch

# The tutorial's body, as in src/model/minigooglenet.ts ARCHITECTURES.minigooglenet.
ARCHITECTURE = [
    ("conv", 96, 3),
    ("inception", 32, 32),
    ("inception", 32, 48),
    ("downsample", 80),
    ("inception", 112, 48),
    ("inception", 96, 64),
    ("inception", 80, 80),
    ("inception", 48, 96),
    ("downsample", 96),
    ("inception", 176, 160),
    ("inception", 176, 160),
]


class ConvModule(nn.Module):
    def __init__(self, cin, cout, kernel, stride, padding):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPSILON, momentum=BN_MOMENTUM)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, cin, k1, k3):
        super().__init__()
        self.one = ConvModule(cin, k1, 1, 1, 0)
        self.three = ConvModule(cin, k3, 3, 1, 1)  # 'same' for 3x3 stride 1
        self.out_channels = k1 + k3

    def forward(self, x):
        return torch.cat([self.one(x), self.three(x)], dim=1)


class Downsample(nn.Module):
    def __init__(self, cin, filters):
        super().__init__()
        self.conv = ConvModule(cin, filters, 3, 2, 0)  # 'valid'
        self.pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = filters + cin

    def forward(self, x):
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


class MiniGoogLeNet(nn.Module):
    def __init__(self, depth=3, classes=10):
        super().__init__()
        layers, c = [], depth
        for module in ARCHITECTURE:
            if module[0] == "conv":
                layers.append(ConvModule(c, module[1], module[2], 1, module[2] // 2))
                c = module[1]
            elif module[0] == "inception":
                layers.append(Inception(c, module[1], module[2]))
                c = layers[-1].out_channels
            else:
                layers.append(Downsample(c, module[1]))
                c = layers[-1].out_channels
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(c, classes)

    def forward(self, x):
        x = self.body(x)
        x = F.adaptive_avg_pool2d(x, 1)  # the whole map, as the TypeScript model pools
        return self.dense(torch.flatten(self.dropout(x), 1))


def keras_param_count(model):
    """Trainable parameters plus BatchNorm's running statistics, as Keras' summary counts them."""
    buffers = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return sum(p.numel() for p in model.parameters()) + buffers


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def measure(model, mode, batch, steps, warmup, device):
    cuda = device.type == "cuda"
    pinned = (lambda t: t.pin_memory()) if cuda else (lambda t: t)

    def synchronize():
        if cuda:
            torch.cuda.synchronize(device)

    gen = torch.Generator().manual_seed(7)
    host_x = pinned(torch.rand(batch, 3, 32, 32, generator=gen) * 240 - 120)
    host_y = pinned(torch.randint(0, 10, (batch,), generator=gen))
    x, y = host_x.to(device), host_y.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=5e-3, momentum=0.9)
    params = [p for p in model.parameters()]
    total = sum(p.numel() for p in params)
    host_grads = pinned(torch.empty(total, dtype=torch.float32))
    model.train()

    def step():
        if mode == "train":
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        else:
            xb = host_x.to(device, non_blocking=True)
            yb = host_y.to(device, non_blocking=True)
            for p in params:
                p.grad = None
            F.cross_entropy(model(xb), yb).backward()
            host_grads.copy_(torch.cat([p.grad.reshape(-1) for p in params]), non_blocking=True)
            if cuda:
                torch.cuda.current_stream(device).synchronize()  # a worker waits for its gradients, as bench:engine does

    for _ in range(warmup):
        step()
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    ms = (time.perf_counter() - started) * 1000 / steps
    return {
        "backend": "pytorch",
        "device": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "model": "minigooglenet",
        "batch": batch,
        "steps": steps,
        "kernels": f"pytorch {torch.__version__}, "
        + (f"cuDNN {torch.backends.cudnn.version()}" if cuda else f"cpu, {torch.get_num_threads()} threads"),
        "mode": mode,
        "tf32": torch.backends.cudnn.allow_tf32 if cuda else False,
        "msPerStep": ms,
        "imgPerSec": batch * 1000 / ms,
        "dispatchesPerStep": None,
        "uploadBytesPerStep": None,
        "apiCallsPerStep": None,
        "sameProgramAcrossSteps": None,
        "replayedMsPerStep": None,
        "replayedImgPerSec": None,
        "encodeMsPerStep": None,
        "encodeMsEachStep": None,
        "replayedApiCallsPerStep": None,
        "replayedKernelsPerStep": None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, action="append", help="batch size; repeat for several (default 64 and 256)")
    parser.add_argument("--mode", choices=["train", "worker", "both"], default="both")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--allow-tf32", action="store_true")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda (default; what the benchmark is for) or cpu (smoke tests of the script only)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        sys.exit(f"--steps and --warmup must be at least 1. Received: steps={args.steps}, warmup={args.warmup}")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("pytorch_minigooglenet.py measures a CUDA GPU and found none (torch.cuda.is_available() is False); "
                     "--device cpu runs it on the CPU, as a smoke test")
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = args.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = args.allow_tf32
    elif args.allow_tf32:
        sys.exit("--allow-tf32 is for --device cuda: the CPU has no TensorFloat-32")
    device = torch.device(args.device)
    torch.manual_seed(1)
    model = MiniGoogLeNet().to(device)
    count = keras_param_count(model)
    if count != EXPECTED_PARAMS:
        sys.exit(f"MiniGoogLeNet must have {EXPECTED_PARAMS:,} parameters as Keras counts them. Received: {count:,}: this is a bug")
    trainable = sum(p.numel() for p in model.parameters())
    print(f"MiniGoogLeNet: {count:,} parameters as Keras counts them ({trainable:,} trainable, "
          f"{count - trainable:,} BatchNorm running statistics), as expected", file=sys.stderr, flush=True)
    modes = ["train", "worker"] if args.mode == "both" else [args.mode]
    results = [measure(model, m, b, args.steps, args.warmup, device) for b in (args.batch or [64, 256]) for m in modes]
    for r in results:
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['device']}  batch {r['batch']:4d}  {r['mode']:6s}  {r['msPerStep']:8.2f} ms/step  {r['imgPerSec']:9.1f} img/s")


if __name__ == "__main__":
    main()
