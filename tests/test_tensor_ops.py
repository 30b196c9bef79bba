"""aresnb.model.tensor_ops against trl.trainer.utils (what PPO and generation used before) on random
tensors: the same numbers, bit for bit, on the CPU; and against the plain formulas."""

import pytest
import torch
from torch import nn
from trl.trainer import utils as trl_utils

from aresnb.model.tensor_ops import disable_dropout_in_model, entropy_from_logits, pad, selective_log_softmax


def ragged(gen: torch.Generator, n: int, trailing: tuple[int, ...] = (), dtype=torch.long) -> list[torch.Tensor]:
    lengths = torch.randint(1, 12, (n,), generator=gen).tolist()
    if dtype == torch.long:
        return [torch.randint(0, 50, (k, *trailing), generator=gen) for k in lengths]
    return [torch.randn((k, *trailing), generator=gen, dtype=dtype) for k in lengths]


@pytest.mark.parametrize("trailing,dtype,value", [((), torch.long, 0), ((), torch.long, 7), ((3,), torch.float32, -1.5)])
def test_pad_equals_trl(trailing, dtype, value):
    tensors = ragged(torch.Generator().manual_seed(0), 6, trailing, dtype)
    ours, theirs = pad(tensors, padding_value=value), trl_utils.pad(tensors, padding_value=value)
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    assert ours.shape[1] == max(len(t) for t in tensors) and torch.equal(ours[0, : len(tensors[0])], tensors[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_selective_log_softmax_equals_trl(dtype, temperature):
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(4, 9, 257, generator=gen)).to(dtype)
    index = torch.randint(0, 257, (4, 9), generator=gen)
    ours = selective_log_softmax(logits, index, temperature=temperature)
    theirs = trl_utils.selective_log_softmax(logits, index, temperature=temperature)
    assert ours.shape == (4, 9) and ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    plain = torch.gather(torch.log_softmax(logits.double() / temperature, -1), -1, index.unsqueeze(-1)).squeeze(-1)
    tol = 1e-12 if dtype == torch.float64 else 1e-5 if dtype == torch.float32 else 0.1
    assert torch.allclose(ours.double(), plain, atol=tol)


def test_selective_log_softmax_refuses_a_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        selective_log_softmax(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0)


@pytest.mark.parametrize("shape,chunk", [((4, 9, 257), 128), ((300, 33), 16)])
def test_entropy_equals_trl(shape, chunk):
    logits = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    ours, theirs = entropy_from_logits(logits, chunk), trl_utils.entropy_from_logits(logits, chunk)
    assert ours.shape == shape[:-1] and torch.equal(ours, theirs)
    p = torch.softmax(logits.double(), -1)
    assert torch.allclose(ours.double(), -(p * p.log()).sum(-1), atol=1e-5)


def test_disable_dropout_zeroes_every_dropout_module():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.3), nn.Sequential(nn.Dropout(0.1), nn.Linear(4, 2)))
    disable_dropout_in_model(model)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0, 0]
    model.train()
    x = torch.randn(5, 4)
    assert torch.equal(model(x), model(x))  # training mode, yet no dropout draw
