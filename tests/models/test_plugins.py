"""Architectures from other packages, through the geoseg.models entry-point group."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.fixture()
def plugin_dist(tmp_path):
    """A real installed distribution (dist-info on sys.path) declaring an entry point."""
    pkg = tmp_path / "tinyseg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class TinyNet(nn.Module):
            spatial_dims = 2
            stride = 1
            receptive_radius = 1

            def __init__(self, in_channels=3, num_classes=2):
                super().__init__()
                self.conv = nn.Conv2d(in_channels, num_classes, 3, padding=1)

            def forward(self, x):
                return self.conv(x)
    '''))
    dist = tmp_path / "tinyseg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyseg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[geoseg.models]\ntiny = tinyseg:TinyNet\n")
    return tmp_path


def test_entry_point_architecture_round_trips_through_a_model_file(plugin_dist, tmp_path):
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(plugin_dist)!r})
        import numpy as np
        import geoseg
        from geoseg.core.classes import ClassInfo
        from geoseg.models import ModelInfo, SegmentationModel, architectures, build_network
        assert "tiny" in architectures(), architectures()
        net = build_network("tiny", {{"in_channels": 3, "num_classes": 2}})
        info = ModelInfo("tiny", "tiny", {{"in_channels": 3, "num_classes": 2}},
                         (ClassInfo("a"), ClassInfo("b")), ("r", "g", "b"), (0, 0, 0), (1, 1, 1))
        geoseg.save_model(SegmentationModel(net, info), {str(tmp_path / "tiny.safetensors")!r})
        model = geoseg.load_model({str(tmp_path / "tiny.safetensors")!r})
        assert model.halo == (1, 1) and model.stride == (1, 1)
        print("ok", model.predict_image(np.ones((3, 5, 7), np.float32)).shape)
    ''')
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ok (2, 5, 7)" in result.stdout
