"""Training-loop behaviour under DDP: a non-finite loss on one rank stops every rank together."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, results: str) -> None:
    from datetime import timedelta

    from timm_camc.engine import NonFiniteLossError, train_one_epoch
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2, timeout=timedelta(seconds=30))
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(6)]
    calls = [0]

    def loss_fn(output, target):
        calls[0] += 1
        loss = torch.nn.functional.cross_entropy(output, target)
        return loss * float('nan') if rank == 1 and calls[0] == 3 else loss  # NaN on one rank only

    try:
        train_one_epoch(0, model, loader, optimizer, loss_fn, torch.device('cpu'), log_interval=2, distributed=True,
                        progress=False)
        outcome = 'finished'
    except NonFiniteLossError:
        outcome = 'NonFiniteLossError'
    except Exception as e:  # e.g. a collective that lost its peer
        outcome = f'{type(e).__name__}: {e}'[:200]
    with open(os.path.join(results, f'rank{rank}.txt'), 'w') as f:
        f.write(outcome)
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason='torch.distributed is not available')
def test_non_finite_loss_on_one_rank_stops_all_ranks(tmp_path):
    mp.start_processes(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method='spawn')
    outcomes = [(tmp_path / f'rank{r}.txt').read_text() for r in range(2)]
    assert outcomes == ['NonFiniteLossError', 'NonFiniteLossError'], outcomes
