# On the GPU machine: the anchors measured through PyTorch (the way
# they were taken), so that the C-API baselines in bench/ can be compared
# with them on the same card. Median ms of 10 calls after 3 warm-ups.
import sys, torch
dev = torch.device("cuda")
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())
def t(label, f, reps=10):
    for _ in range(3): f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
        s.record(); f(); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
    ts.sort(); print(f"{label:48s} {ts[len(ts)//2]:9.3f} ms", flush=True)
g = torch.Generator(device=dev).manual_seed(1)
for lib in ["default", "cusolver", "magma"]:
    if lib != "default":
        try: torch.backends.cuda.preferred_linalg_library(lib)
        except Exception as ex: print(lib, "unavailable:", ex); continue
    print("== preferred library:", torch.backends.cuda.preferred_linalg_library())
    for dt in [torch.float32, torch.float64]:
        x = torch.randn(8192, 8192, device=dev, dtype=dt, generator=g)
        spd = x @ x.T + 8192 * torch.eye(8192, device=dev, dtype=dt)
        t(f"cholesky 8192^2 {dt}", lambda: torch.linalg.cholesky(spd))
        del x, spd
    a = torch.randn(8192, 8192, device=dev, generator=g); b = torch.randn(8192, 16, device=dev, generator=g)
    t("solve 8192^2, 16 rhs float32", lambda: torch.linalg.solve(a, b))
    t("lu_factor 8192^2 float32", lambda: torch.linalg.lu_factor(a))
    for m, n in [(100000, 64), (1000000, 32)]:
        a = torch.randn(m, n, device=dev, generator=g)
        t(f"qr {m}x{n} float32 reduced", lambda: torch.linalg.qr(a))
    a = torch.randn(1000, 128, 128, device=dev, generator=g)
    spd = a @ a.mT + 128 * torch.eye(128, device=dev)
    t("cholesky 1000 x 128^2 float32", lambda: torch.linalg.cholesky(spd))
