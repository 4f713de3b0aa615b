"""Feature extractors a run config can name (``hyperparams.features_extractor``), beside SB3's own.

The names are in :data:`equirl.rl.algos.FEATURE_EXTRACTORS`, the one table of them: a config names an
extractor by its key, and an agent's zip names the class, which :mod:`equirl.rl.safe_load` allows by that
table. The symmetrizers act on the raw observation, before any extractor, so an extractor needs nothing
to be made equivariant.
"""

from __future__ import annotations

from collections.abc import Callable

from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

__all__ = ["MinAtarCNN"]


class MinAtarCNN(BaseFeaturesExtractor):  # type: ignore[misc]
    """The network of MinAtar's DQN (Young & Tian, 2019, "MinAtar: An Atari-Inspired Testbed for Thorough
    and Reproducible Reinforcement Learning Experiments"): one 3x3 convolution with 16 filters (stride 1,
    no padding) on the channel-last ``H x W x C`` frame, a ReLU, and a linear layer to ``features_dim``
    units with a ReLU; SB3's Q-network head follows (``net_arch``).

    :param observation_space: a ``Box`` of shape ``(H, W, C)`` (MinAtar's 10x10 frames, boolean or numeric).
    :param features_dim: the units of the linear layer (128 in the paper).
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        shape = tuple(observation_space.shape or ())
        if len(shape) != 3 or min(shape[:2]) < 3:
            raise ValueError(f"MinAtarCNN needs H x W x C frames of at least 3x3, got shape {shape}")
        h, w, c = (int(n) for n in shape)
        self.conv = nn.Sequential(nn.Conv2d(c, 16, 3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(16 * (h - 2) * (w - 2), features_dim), nn.ReLU())

    @staticmethod
    def channels_first(observations: Tensor) -> Tensor:
        """``(B, H, W, C)`` frames as float ``(B, C, H, W)`` maps."""
        return observations.float().permute(0, 3, 1, 2)

    def fold_parts(self) -> tuple[Callable[[Tensor], Tensor], nn.Sequential, nn.Module]:
        """``(enter, convolutions, leave)`` with ``forward = leave ∘ convolutions ∘ enter`` (for folding a
        symmetry group into the kernels, :class:`equirl.rl.policies.heads.FoldableNet`)."""
        return self.channels_first, self.conv, self.linear

    def forward(self, observations: Tensor) -> Tensor:
        return self.linear(self.conv(self.channels_first(observations)))  # type: ignore[no-any-return]
