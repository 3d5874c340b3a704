"""One quick synthetic world (tables + audio + MFCC content) shared by the dataset tests."""

from __future__ import annotations

import pytest

from training.datasets.synthetic import content_dir, extract_world_audio, load_world, world_params


@pytest.fixture(scope="session")
def world_root(tmp_path_factory):
    return tmp_path_factory.mktemp("worlds")


@pytest.fixture(scope="session")
def quick_world(world_root):
    world = load_world(world_params("quick"), world_root, progress=False)
    extract_world_audio(world, "mfcc", content_dir(world, "mfcc"), progress=False)
    return world
