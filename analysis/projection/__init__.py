"""Scaling projection: fit a step-time model per strategy on a sweep's runs, predict 1..1024 nodes.

    python -m analysis.projection --sweep NAME [--logs DIR] [--link 10gbe] [--max-nodes 1024]

One module per job: `points` reduces a sweep's COMPLETED runs (analysis.load: each rank file's
last attempt) to measured points, `model` is the step-time model and its predictions, `fit`
fits it to the points, `sweep` projects a whole sweep (and hands it to analysis.advise),
`output` writes logs/<sweep>/projection.csv and plots/projection.png, `cli` reads the flags.

The model of one optimizer step on W = nodes x procs ranks (docs/projection.md):

    T(W) = compute + local_comm + link
    compute    = (c0 + s * b) * r                 b: samples per computing rank, B / dp(W)
    local_comm = kappa * bytes(W) * rc + u * r    kappa: this machine's cost per byte sent; u: ps server update
    link       = latency * messages(W) + bytes(W) / bandwidth      only between nodes
    r          = max(1, ranks on a machine * busy / its cores)     CPU contention (time sharing)
    busy       = a rank's cpu_s / (step_s x its threads), measured where 1 < W <= cores
    rc         = r, except 1 for ps: its exchange is serial at the server while the workers wait

    bytes(W) per pattern, P fitted from comm_bytes:   all-reduce / sharded collectives: 2 P (W-1)/W
    (ring all-reduce sends 2(N-1)/N x the gradient size), parameter server: P (W-1) at the server,
    pipeline: P (activations at a stage boundary).   messages(W): 2(W-1), 2, 2 x chunks.
    Pipelines: compute = A (M+K-1)/(M K) * r, A the whole model's compute per step, K stages,
    M micro-batches: the bubble (K-1)/(M+K-1) idles each stage.

c0, s come from the measured `compute_s` (least squares over the node counts; a strategy with
"""
