# Where a GPU epoch's time goes: data loader vs model steps, deterministic kernels on/off (uiunet_tiny, uiunet).
import time, sys, torch, os
from uiunet.data import get_dataset
from uiunet.learner import _loader, seed_everything, Learner
from uiunet.models import create_model
from uiunet.recipes import recipe_transforms
dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
seed_everything(0)
tf, _ = recipe_transforms('standard', 'sirst', 256)
ds = get_dataset('sirst', '5050_train:fit', transform=tf, in_channels=3, cache=True, seed=0)
for ep in range(2):
    t0 = time.perf_counter(); n = 0
    for b in _loader(ds, 8, True, 0, ep, dev): n += 1
    t1 = time.perf_counter(); print(f'loader epoch {ep}: {n} batches in {t1-t0:.2f} s', flush=True)
b = next(iter(_loader(ds, 8, True, 0, 0, torch.device('cpu'))))
x, y = b['image'].to(dev), b['mask'].to(dev)
for name in sys.argv[1:]:
    net = create_model(name, in_channels=3)
    learn = Learner(net, ds, None, out_dir='/tmp/profrun', recipe='standard', batch_size=8, device=dev)
    m, opt = learn.model, torch.optim.Adam(learn.model.parameters(), 1e-4)
    fmt = torch.channels_last if learn.channels_last else torch.contiguous_format
    for det in (True, False):
        torch.use_deterministic_algorithms(det, warn_only=True); torch.backends.cudnn.benchmark = not det
        for i in range(13):
            if i == 3: sync(); t0 = time.perf_counter()
            with learn.autocast(): out = m(x.contiguous(memory_format=fmt))
            out = [o.float() for o in out] if isinstance(out, (tuple, list)) else out.float()
            loss = learn.loss_fn(out, y); learn.scaler.scale(loss).backward() if hasattr(learn, 'scaler') else loss.backward()
            (learn.scaler.step(opt), learn.scaler.update()) if hasattr(learn, 'scaler') else opt.step(); opt.zero_grad()
        sync(); print(f'{name} {learn.precision} channels_last={learn.channels_last} deterministic={det}: {(time.perf_counter()-t0)/10*1000:.1f} ms per step', flush=True)
    torch.use_deterministic_algorithms(True, warn_only=True); torch.backends.cudnn.benchmark = False
    t0 = time.perf_counter(); learn.fit(1); print(f'{name} Learner.fit 1 epoch: {time.perf_counter()-t0:.2f} s', flush=True)
    t0 = time.perf_counter(); learn.save('/tmp/profrun/x.safetensors') if hasattr(learn, 'save') else None; print(f'{name} save: {time.perf_counter()-t0:.2f} s')
