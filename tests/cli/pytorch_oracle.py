#!/usr/bin/python3
"""pytorch_oracle: `clbn run` against torch.nn.BatchNorm2d / BatchNorm1d.

The oracle is PyTorch in float64 on the same float32 inputs clbn reads, so the comparison
measures clbn's own error. Every output must satisfy |clbn - torch| <= 1e-5 + 1e-5 * |torch|.
Usage: /usr/bin/python3 pytorch_oracle.py CLBN_BINARY WORK_DIR
"""
import copy
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a skip would hide the comparison: in CI it must fail
    print(f"FAIL: cannot import numpy and torch ({e}); install python3-numpy and python3-torch "
          "and run this with /usr/bin/python3")
    sys.exit(1)

ATOL = 1e-5
RTOL = 1e-5
EPS = 1e-5

CLBN = sys.argv[1]
WORK = sys.argv[2]
torch.set_grad_enabled(True)


class Report:
    def __init__(self):
        self.checks = 0
        self.failures = []
        self.worst = {}  # output name -> worst |err|

    def close(self, what, name, got, ref):
        self.checks += 1
        ref = np.asarray(ref, dtype=np.float64)
        if got is None:
            self.failures.append(f"{what}: {name}: no output file")
            print(f"FAIL {what}: {name}: no output file")
            return
        if got.shape != ref.shape:
            self.failures.append(f"{what}: {name}: shape {got.shape}, torch {ref.shape}")
            print(f"FAIL {what}: {name}: shape {got.shape}, torch {ref.shape}")
            return
        err = np.abs(got.astype(np.float64) - ref)
        worst = float(err.max()) if err.size else 0.0
        self.worst[name] = max(self.worst.get(name, 0.0), worst)
        bad = err > ATOL + RTOL * np.abs(ref)
        if bad.any() or not np.isfinite(got).all():
            i = np.unravel_index(int(np.argmax(err - (ATOL + RTOL * np.abs(ref)))), err.shape)
            msg = (f"{what}: {name}: {int(bad.sum())} of {err.size} values off, worst at {i}: "
                   f"clbn {got[i]!r} torch {ref[i]!r}")
            self.failures.append(msg)
            print("FAIL " + msg)

    def fail(self, msg):
        self.checks += 1
        self.failures.append(msg)
        print("FAIL " + msg)


R = Report()
counter = [0]


def case_dir(tag):
    counter[0] += 1
    d = os.path.join(WORK, f"{counter[0]:03d}-{tag}")
    os.makedirs(d)
    return d


def to_file(x, layout):
    """An NCHW (or NC) array as the layout stores it."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1) if layout == "nhwc" else x)


def from_file(y, layout):
    return y.transpose(0, 3, 1, 2) if layout == "nhwc" else y


def clbn(what, op, layout, inputs, flags=(), state=None, expect_ok=True):
    """Runs `clbn run op`; inputs maps option names (x, dy, y, gamma, ...) to float32 arrays
    (x, dy, y in NCHW/NC order). Returns the outputs, tensors back in NCHW/NC order."""
    d = case_dir(what.replace("/", "-").replace(" ", "_"))
    args = [CLBN, "run", op, "--layout", layout, "--out", os.path.join(d, "out")]
    for name, arr in inputs.items():
        path = os.path.join(d, f"{name}.npy")
        arr = arr.astype(np.float32)
        np.save(path, to_file(arr, layout) if name in ("x", "dy", "y") else arr)
        args += [f"--{name.replace('_', '-')}", path]
    args += list(flags)
    if state:
        args += ["--state", state]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        if expect_ok:
            R.fail(f"{what}: clbn exited {p.returncode}: {p.stderr.strip()}")
        return None
    out = {}
    for f in os.listdir(os.path.join(d, "out")):
        a = np.load(os.path.join(d, "out", f))
        if a.dtype != np.float32:
            R.fail(f"{what}: {f} has dtype {a.dtype}")
        name = f[:-4]
        out[name] = from_file(a, layout) if name in ("y", "dx") else a
    return out


def make_module(C, ndim, affine=True, track=True, momentum=0.1):
    cls = torch.nn.BatchNorm2d if ndim == 4 else torch.nn.BatchNorm1d
    return cls(C, eps=EPS, momentum=momentum, affine=affine, track_running_stats=track).double()


def set_params(m, gamma, beta, rmean, rvar):
    with torch.no_grad():
        if m.affine:
            m.weight.copy_(torch.from_numpy(gamma.astype(np.float64)))
            m.bias.copy_(torch.from_numpy(beta.astype(np.float64)))
        if m.track_running_stats:
            m.running_mean.copy_(torch.from_numpy(rmean.astype(np.float64)))
            m.running_var.copy_(torch.from_numpy(rvar.astype(np.float64)))


ACT = {"none": lambda z: z, "relu": F.relu, "sigmoid": torch.sigmoid}


def torch_run(m, x, dy=None, act="none", train=True):
    """Forward (and backward with dy) of act(m(x)) in float64. Returns numpy results."""
    m.train(train)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(dy is not None)
    for p in m.parameters():
        p.grad = None
    y = ACT[act](m(xt))
    res = {"y": y.detach().numpy().copy()}
    if dy is not None:
        y.backward(torch.from_numpy(dy.astype(np.float64)))
        res["dx"] = xt.grad.numpy().copy()
        if m.affine:
            res["dgamma"] = m.weight.grad.numpy().copy()
            res["dbeta"] = m.bias.grad.numpy().copy()
    if m.track_running_stats:
        res["running_mean"] = m.running_mean.detach().numpy().copy()
        res["running_var"] = m.running_var.detach().numpy().copy()
    return res


def batch_stats(x):
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    x = x.astype(np.float64)
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)  # biased, as the normalization uses
    return mean, 1.0 / np.sqrt(var + EPS)


def compare(what, got, ref, names):
    if got is None:
        return
    for n in names:
        R.close(what, n, got.get(n), ref[n])


class Data:
    def __init__(self, seed, layout, shape):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.layout = layout
        self.shape = shape
        C = shape[1]
        self.C = C
        self.gamma = rng.uniform(0.5, 1.5, C).astype(np.float32)
        self.beta = rng.uniform(-0.5, 0.5, C).astype(np.float32)
        self.rmean = rng.normal(0.0, 0.5, C).astype(np.float32)
        self.rvar = rng.uniform(0.5, 2.0, C).astype(np.float32)
        self.offset = rng.uniform(-3.0, 3.0, C)
        self.scale = rng.uniform(0.5, 2.0, C)

    def batch(self):
        bshape = (1, self.C, 1, 1) if len(self.shape) == 4 else (1, self.C)
        x = self.rng.standard_normal(self.shape) * self.scale.reshape(bshape)
        return (x + self.offset.reshape(bshape)).astype(np.float32)

    def grad(self):
        return self.rng.standard_normal(self.shape).astype(np.float32)


def shapes(layout):
    if layout == "nc":
        return [(16, 5), (1000, 3), (2, 1)]
    # C = 1, N = 1 with H*W > 1, odd sizes, and a slice longer than a work-group.
    return [(4, 3, 5, 7), (1, 2, 9, 11), (3, 1, 4, 4), (8, 16, 9, 11)]


def single_op_cases(layout, shape, seed):
    """Every op and mode on one shape, each clbn call from the command line alone."""
    tag = f"{layout}{list(shape)}"
    d = Data(seed, layout, shape)
    x, dy = d.batch(), d.grad()
    ndim = len(shape)
    mean, invstd = batch_stats(x)
    m_values = shape[0] * (shape[2] * shape[3] if ndim == 4 else 1)

    for affine in (True, False):
        a_tag = f"{tag} {'affine' if affine else 'no-affine'}"
        vec = {"gamma": d.gamma, "beta": d.beta} if affine else {}
        aflags = [] if affine else ["--no-scale", "--no-center"]
        run_stats = {"running_mean": d.rmean, "running_var": d.rvar}

        def module(track=True):
            mod = make_module(d.C, ndim, affine=affine, track=track)
            set_params(mod, d.gamma, d.beta, d.rmean, d.rvar)
            return mod

        # Training forward (batch statistics, running statistics updated once).
        if m_values > 1:
            for act in ("none", "relu", "sigmoid"):
                what = f"{a_tag} train act={act}"
                got = clbn(what, "train", layout, {"x": x, **vec, **run_stats},
                           aflags + ["--activation", act])
                ref = torch_run(module(), x, act=act)
                ref["mean"], ref["invstd"] = mean, invstd
                compare(what, got, ref, ["y", "mean", "invstd", "running_mean", "running_var"])

        # Eval with running statistics.
        what = f"{a_tag} infer"
        got = clbn(what, "infer", layout, {"x": x, **vec, **run_stats}, aflags)
        compare(what, got, torch_run(module(), x, train=False),
                ["y", "running_mean", "running_var"])

        # Backward of the training forward, without and with a fused activation (y recomputed,
        # and for relu also taken from the train call's y.npy).
        grads = ["dx", "dgamma", "dbeta"] if affine else ["dx"]
        if m_values > 1:
            for act in ("none", "relu", "sigmoid"):
                what = f"{a_tag} backward act={act}"
                got = clbn(what, "backward", layout, {"x": x, "dy": dy, **vec, **run_stats},
                           aflags + ["--activation", act])
                ref = torch_run(module(), x, dy=dy, act=act)
                # backward changes no running statistics: torch's forward did, so compare with
                # the values given.
                ref["running_mean"], ref["running_var"] = d.rmean, d.rvar
                compare(what, got, ref, grads + ["running_mean", "running_var"])
            # The same through a new --state: made from the command line, saved with its
            # running statistics untouched by the backward.
            what = f"{a_tag} backward into a new state"
            state = os.path.join(WORK, f"new-state-{seed}-{int(affine)}.bin")
            got = clbn(what, "backward", layout, {"x": x, "dy": dy, **vec, **run_stats}, aflags,
                       state=state)
            ref = torch_run(module(), x, dy=dy)
            ref["running_mean"], ref["running_var"] = d.rmean, d.rvar
            compare(what, got, ref, grads + ["running_mean", "running_var"])
            what = f"{a_tag} infer from the state made by backward"
            got = clbn(what, "infer", layout, {"x": x}, state=state)
            compare(what, got, torch_run(module(), x, train=False),
                    ["y", "running_mean", "running_var"])
            what = f"{a_tag} backward act=relu with --y"
            fwd = clbn(what + " (forward)", "train", layout, {"x": x, **vec}, aflags +
                       ["--activation", "relu"])
            if fwd is not None:
                got = clbn(what, "backward", layout, {"x": x, "dy": dy, "y": fwd["y"], **vec},
                           aflags + ["--activation", "relu"])
                compare(what, got, torch_run(module(), x, dy=dy, act="relu"), grads)

        # Frozen: the running statistics as constants, forward and backward (torch eval mode).
        for act in ("none", "relu"):
            what = f"{a_tag} frozen train act={act}"
            got = clbn(what, "train", layout, {"x": x, **vec, **run_stats},
                       aflags + ["--frozen", "--activation", act])
            ref = torch_run(module(), x, act=act, train=False)
            compare(what, got, ref, ["y", "running_mean", "running_var"])
            if got is not None and ("mean" in got or "invstd" in got):
                R.fail(f"{what}: wrote saved statistics, but frozen saves none")
            what = f"{a_tag} frozen backward act={act}"
            got = clbn(what, "backward", layout, {"x": x, "dy": dy, **vec, **run_stats},
                       aflags + ["--frozen", "--activation", act])
            compare(what, got, torch_run(module(), x, dy=dy, act=act, train=False),
                    grads + ["running_mean", "running_var"])

        # No running statistics: train and eval both use the batch's statistics.
        if m_values > 1:
            what = f"{a_tag} no-track train"
            got = clbn(what, "train", layout, {"x": x, **vec}, aflags + ["--no-track"])
            ref = torch_run(module(track=False), x)
            ref["mean"], ref["invstd"] = mean, invstd
            compare(what, got, ref, ["y", "mean", "invstd"])
            if got is not None and "running_mean" in got:
                R.fail(f"{what}: wrote running_mean.npy without running statistics")
            what = f"{a_tag} no-track infer"
            got = clbn(what, "infer", layout, {"x": x, **vec}, aflags + ["--no-track"])
            compare(what, got, torch_run(module(track=False), x, train=False), ["y"])
            what = f"{a_tag} no-track backward"
            got = clbn(what, "backward", layout, {"x": x, "dy": dy, **vec},
                       aflags + ["--no-track"])
            compare(what, got, torch_run(module(track=False), x, dy=dy), grads)


def state_cases(layout, shape, seed, cumulative, act):
    """Several training steps through --state, then eval, backward and frozen from it."""
    tag = f"{layout}{list(shape)} {'cumulative' if cumulative else 'momentum=0.1'} act={act}"
    d = Data(seed, layout, shape)
    ndim = len(shape)
    state = os.path.join(WORK, f"state-{seed}.bin")
    mod = make_module(d.C, ndim, momentum=None if cumulative else 0.1)
    set_params(mod, d.gamma, d.beta, d.rmean, d.rvar)
    mode_flag = ["--cumulative"] if cumulative else ["--momentum", "0.1"]
    steps = 4
    x = dy = None
    for step in range(steps):
        x = d.batch()
        what = f"{tag} step {step + 1}"
        inputs = {"x": x}
        flags = []
        if step == 0:  # the state is made from the command line
            inputs.update(gamma=d.gamma, beta=d.beta, running_mean=d.rmean, running_var=d.rvar)
            flags = mode_flag + ["--activation", act]
        elif step == 2:  # options equal to the state's are accepted
            flags = mode_flag + ["--activation", act, "--eps", "1e-5"]
        got = clbn(what, "train", layout, inputs, flags, state=state)
        mean, invstd = batch_stats(x)
        if step == steps - 1:
            # Keep torch's graph of the last step: the state's backward must match it.
            dy = d.grad()
            last = torch_run(mod, x, dy=dy, act=act)
            ref = last
        else:
            ref = torch_run(mod, x, act=act)
        ref["mean"], ref["invstd"] = mean, invstd
        compare(what, got, ref, ["y", "mean", "invstd", "running_mean", "running_var"])

    # Backward from the statistics the last step saved in the state.
    what = f"{tag} backward from state"
    got = clbn(what, "backward", layout, {"x": x, "dy": dy}, state=state)
    ref = dict(last)
    compare(what, got, ref, ["dx", "dgamma", "dbeta", "running_mean", "running_var"])

    # Eval after training, on a new batch.
    xe = d.batch()
    what = f"{tag} infer after training"
    got = clbn(what, "infer", layout, {"x": xe}, state=state)
    compare(what, got, torch_run(mod, xe, act=act, train=False),
            ["y", "running_mean", "running_var"])

    # Frozen train and backward from the state: nothing in the running statistics moves.
    what = f"{tag} frozen train from state"
    got = clbn(what, "train", layout, {"x": xe}, ["--frozen"], state=state)
    compare(what, got, torch_run(mod, xe, act=act, train=False),
            ["y", "running_mean", "running_var"])
    what = f"{tag} frozen backward from state"
    dye = d.grad()
    frozen_mod = copy.deepcopy(mod)
    got = clbn(what, "backward", layout, {"x": xe, "dy": dye}, ["--frozen"], state=state)
    compare(what, got, torch_run(frozen_mod, xe, dy=dye, act=act, train=False),
            ["dx", "dgamma", "dbeta", "running_mean", "running_var"])


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    print(f"torch {torch.__version__}, numpy {np.__version__}; oracle: torch float64; "
          f"tolerance |err| <= {ATOL} + {RTOL}*|ref|")
    seed = 1
    for layout in ("nchw", "nhwc", "nc"):
        for shape in shapes(layout):
            single_op_cases(layout, shape, seed)
            seed += 1
    for layout in ("nchw", "nhwc", "nc"):
        shape = (6, 4, 5, 3) if layout != "nc" else (32, 6)
        for cumulative, act in ((False, "none"), (True, "relu"), (False, "sigmoid")):
            state_cases(layout, shape, seed, cumulative, act)
            seed += 1

    print("worst |clbn - torch| per output: " +
          ", ".join(f"{k} {v:.2e}" for k, v in sorted(R.worst.items())))
    print(f"{R.checks} comparisons, {len(R.failures)} failures")
    if R.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
