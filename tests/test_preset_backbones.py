"""The build skeleton that preset-based plugins (keras-cv, keras-hub, third parties) share."""

import pytest

from keras_tlft.preset_backbones import PresetLibrary, WeightsDownloadError

LIBRARY = PresetLibrary(module="json", source="fake", install_hint="pip install fake")


class _Model:
    def __init__(self, how):
        self.how, self.loaded = how, None

    def load_weights(self, path):
        self.loaded = path


def _build(weights, include_top=False, from_preset=None):
    return LIBRARY.build(
        "net", weights, include_top,
        construct=lambda: _Model("constructed"),
        from_preset=from_preset or (lambda: _Model("preset")),
        preset="net_imagenet",
    )


def test_no_weights_or_a_file_construct_offline_and_a_name_loads_the_preset(tmp_path):
    assert _build(None).how == "constructed"
    path = tmp_path / "net.weights.h5"
    path.write_bytes(b"")
    model = _build(str(path))
    assert model.how == "constructed" and model.loaded == str(path)
    assert _build("imagenet").how == "preset"


def test_a_failed_download_says_how_to_work_offline():
    def offline():
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    with pytest.raises(WeightsDownloadError) as info:
        _build("imagenet", from_preset=offline)
    message = str(info.value)
    assert message.startswith("Could not download preset 'net_imagenet' ('imagenet' weights "
                              "of fake:net) from Kaggle: ConnectionError")
    assert "pass weights=None" in message


def test_other_errors_of_the_preset_are_not_disguised():
    def broken():
        raise KeyError("num_layers")

    with pytest.raises(KeyError):
        _build("imagenet", from_preset=broken)


def test_include_top_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"json backbones have no classifier top; build fake:net "
                                         r"with include_top=False.*include_top=True"):
        _build(None, include_top=True)


def test_a_missing_library_says_how_to_install_it():
    missing = PresetLibrary(module="no_such_lib_xyz", source="fake", install_hint="pip install x")
    assert not missing.is_installed() and LIBRARY.is_installed()
    with pytest.raises(ImportError, match=r"The fake backbones need no-such-lib-xyz, which is not "
                                          r"installed. Install it with `pip install x`"):
        missing.load()
