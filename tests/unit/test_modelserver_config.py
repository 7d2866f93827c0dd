"""Model server settings: TF Serving's flag names, a batching parameters file, environment defaults."""

from pathlib import Path

import pytest

from services.common.settings import InvalidSettings
from services.modelserver.config import available_cpus, load_settings, parse_batching_parameters


def test_defaults_match_tf_serving(monkeypatch):
    monkeypatch.delenv("TAGSMITH_MODEL_BASE_PATH", raising=False)
    settings = load_settings([])
    assert settings.port == 8500
    assert settings.model_base_path == Path("models")
    assert settings.enable_batching is True
    assert settings.enable_model_warmup is True


def test_model_warmup_flag_as_tf_serving_spells_it():
    assert load_settings(["--enable_model_warmup=false"]).enable_model_warmup is False
    assert load_settings(["--enable_model_warmup"]).enable_model_warmup is True


def test_tf_serving_flags(tmp_path):
    settings = load_settings(
        [
            "--port=0",
            "--model_name=resnet",
            f"--model_base_path={tmp_path}",
            "--enable_batching=false",
            "--tensorflow_intra_op_parallelism=2",
            "--tensorflow_inter_op_parallelism",
            "1",
            "--port_file",
            "p",
        ]
    )
    assert (settings.port, settings.model_name, settings.model_base_path) == (0, "resnet", tmp_path)
    assert settings.enable_batching is False
    assert (settings.intra_op_threads, settings.inter_op_threads) == (2, 1)
    assert settings.port_file == Path("p")
    assert load_settings(["--enable_batching"]).enable_batching is True
    assert load_settings(["--rest_api_port=8501", "--file_system_poll_wait_seconds=0"]).port == 8500


def test_batching_parameters_file_and_flag_precedence(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 500 }\nnum_batch_threads: 2\n")
    settings = load_settings([f"--batching_parameters_file={path}", "--max_batch_size=16"])
    assert (settings.max_batch_size, settings.batch_timeout_micros, settings.num_batch_threads) == (16, 500, 2)


def test_batching_parameters_parser_rejects_missing_values():
    assert parse_batching_parameters("pad_variable_length_inputs: true\nmax_batch_size {value:8}") == {
        "max_batch_size": 8
    }
    with pytest.raises(ValueError, match="max_batch_size"):
        parse_batching_parameters("max_batch_size { }")


def test_environment_is_read_and_flags_win(monkeypatch):
    monkeypatch.setenv("TAGSMITH_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("TAGSMITH_PORT", "9000")
    settings = load_settings(["--port", "9001"])
    assert (settings.max_batch_size, settings.port) == (4, 9001)


def test_bad_values_fail_fast():
    with pytest.raises(ValueError, match=r"\n  --max_batch_size: Input should be greater than or equal to 1$"):
        load_settings(["--max_batch_size=0"])
    with pytest.raises(SystemExit):
        load_settings(["--enable_batching=maybe"])


def test_a_bad_value_is_named_as_the_operator_gave_it(monkeypatch, tmp_path: Path):
    """A flag by its flag, a batching file's field by the file, an environment variable by the variable."""
    monkeypatch.setenv("TAGSMITH_NUM_BATCH_THREADS", "0")
    batching = tmp_path / "batching.config"
    batching.write_text("max_enqueued_batches { value: 0 }")
    with pytest.raises(InvalidSettings) as err:
        load_settings(["--tensorflow_intra_op_parallelism=-1", f"--batching_parameters_file={batching}"])
    assert set(str(err.value).splitlines()[1:]) == {
        f"  max_enqueued_batches in {batching}: Input should be greater than or equal to 1",
        "  TAGSMITH_NUM_BATCH_THREADS: Input should be greater than or equal to 1",
        "  --tensorflow_intra_op_parallelism: Input should be greater than or equal to 0",
    }


def test_threads_default_to_one_batch_per_cpu():
    settings = load_settings([])
    assert settings.intra_op_threads == 1
    assert settings.num_batch_threads == settings.inter_op_threads == available_cpus()


def test_available_cpus_honours_a_container_cpu_limit(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    unlimited = available_cpus(tmp_path / "missing")
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == unlimited
    cpu_max.write_text("50000 100000\n")
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text("150000 100000\n")
    assert available_cpus(cpu_max) == min(2, unlimited)
