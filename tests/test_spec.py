"""The plain data of a backbone: importable without Keras or pluggy, names and suggestions."""

import subprocess
import sys

import keras_tlft
from keras_tlft.spec import closest_names, did_you_mean


def test_the_data_module_imports_neither_keras_nor_pluggy():
    code = ("import sys; import keras_tlft.spec; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'pluggy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_plugins_import_the_data_types_from_the_top_level():
    from keras_tlft import BackboneSpec, BlockRule, hookimpl
    from keras_tlft.registry import BackboneSpec as registry_spec

    assert BackboneSpec is registry_spec and BlockRule.__module__ == "keras_tlft.backbones.spec"
    assert callable(hookimpl)


def test_did_you_mean_names_the_closest_names():
    assert closest_names("resnt50", ["resnet50", "resnet101", "vgg16"]) == ["resnet50", "resnet101"]
    assert closest_names("vgg", ["resnet50", "xception"]) == []
    assert did_you_mean(["resnet50", "resnet101"]) == " Did you mean: resnet50, resnet101?"
    assert did_you_mean([]) == ""


def test_dir_lists_every_public_name_lazy_ones_included():
    names = dir(keras_tlft)
    for name in ("ProgressiveUnfreeze", "build_model", "fit_frozen", "plan_stages",
                 "join_histories", "BackboneSpec", "hookimpl", "get_backbone"):
        assert name in names
    assert set(names) == {*keras_tlft.__all__, "__version__"}
    assert all(hasattr(keras_tlft, name) for name in keras_tlft.__all__)
