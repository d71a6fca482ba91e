"""Sweep specs refused at load, in the form of every other spec error: a cluster past a job's
bounds, a name with control characters, a parameter given as a section or through a list."""

from __future__ import annotations

import os

import pytest

from geoseg.errors import TrainSpecError
from geoseg.training.sweeps import SweepSpec, load_sweep_spec, make_trials

PAIR = {"image": {"url": "in.zarr"}, "labels": {"url": "in.zarr"}}
BASE = {"data": {"train": [PAIR], "classes": ["a", "b"]}, "output": {"model": "m.safetensors"}}


def sweep(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text("base: {data: {train: [{image: {url: in.zarr}, labels: {url: in.zarr}}], "
                    "classes: [a, b]}, output: {model: m.safetensors}}\n"
                    "output: {dir: sw}\n" + text)
    return load_sweep_spec(path)


def refusal(tmp_path, text: str) -> str:
    with pytest.raises(TrainSpecError) as caught:
        sweep(tmp_path, text)
    return " ".join(str(caught.value).split())


def test_a_sweep_cluster_has_a_job_cluster_bounds(tmp_path):
    cores = os.cpu_count() or 1
    many = refusal(tmp_path, "parameters: {training.lr: [0.001]}\ncluster: {n_workers: 1000}\n")
    assert (f"cluster.n_workers: received 1000 (int); expected at most {4 * cores} worker "
            "processes for a local cluster on this machine") in many
    remote = refusal(tmp_path, "parameters: {training.lr: [0.001]}\n"
                               "cluster: {n_workers: 100000, scheduler: 'tcp://h:8786'}\n")
    assert "cluster.n_workers: received 100000 (int); expected at most 10000" in remote
    threads = refusal(tmp_path, "parameters: {training.lr: [0.001]}\n"
                                "cluster: {threads_per_worker: 100000}\n")
    assert "cluster.threads_per_worker: received 100000 (int); expected less than or equal " \
           "to 1024" in threads
    fine = sweep(tmp_path, "parameters: {training.lr: [0.001]}\n"
                           "cluster: {n_workers: 1, threads_per_worker: 2}\n")
    assert (fine.cluster.n_workers, fine.cluster.threads_per_worker) == (1, 2)


def test_a_sweep_name_with_an_escape_code_is_refused_at_load(tmp_path):
    message = refusal(tmp_path, 'parameters: {training.lr: [0.001]}\nname: "a\\x1b[31mb"\n')
    assert "name: received 'a\\x1b[31mb' (str); expected a name of printable characters" in message


def test_a_key_through_a_list_is_an_error_of_the_sweep_file(tmp_path):
    spec = sweep(tmp_path, "parameters: {data.classes.0.name: [x]}\n")
    with pytest.raises(TrainSpecError) as caught:
        make_trials(spec, str(tmp_path / "sweep.yaml"))
    message = " ".join(str(caught.value).split())
    assert message.startswith(f"{tmp_path / 'sweep.yaml'}: parameters.data.classes.0.name: "
                              "received a key through data.classes, which the base spec holds "
                              "as a list (['a', 'b']), not a section of keys")
    assert "(data.classes: [...], each value a complete one)" in message


def test_parameters_given_as_a_section_say_to_use_dotted_keys(tmp_path):
    message = refusal(tmp_path, "parameters: {training: {lr: [0.001]}}\n")
    assert ("'training' holds a mapping of lr. Name each parameter by its dotted key "
            "(training.lr: [...]), or give a range (training: {low: 0.001, high: 0.1})") in message
    assert "RangeSpec" not in message and "allowed keys here: ." not in message


def test_a_range_with_an_unknown_key_names_the_range_keys_not_its_class():
    with pytest.raises(TrainSpecError) as caught:
        SweepSpec.from_dict({"base": BASE, "method": "random", "trials": 2, "output": {"dir": "d"},
                             "parameters": {"training.lr": {"low": 1, "hihg": 2}}})
    message = str(caught.value)
    assert ("parameters.training.lr.hihg: unknown key; allowed keys here: low, high, log, "
            "integer.") in message
    assert "parameters.training.lr.high: required but missing." in message
    assert "RangeSpec" not in message
