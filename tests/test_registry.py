"""The one registry pattern: the generic Registry, and the registries built on it."""

import pytest

from neurotomy.errors import NeurotomyError
from neurotomy.registry import Registry


class ShapeError(NeurotomyError):
    pass


@pytest.fixture
def shapes():
    shapes = Registry("shape", error=ShapeError, hint="(see `shapes --list`)")

    @shapes.register(sides=4)
    class Square:
        name = "square"

    @shapes.register("triangle", sides=3)
    def triangle():
        return "△"

    shapes.add("rectangle", object(), sides=4)
    return shapes


def test_register_get_and_names_in_registration_order(shapes):
    assert shapes.names() == ["square", "triangle", "rectangle"] == list(shapes)
    assert shapes.get("triangle")() == "△" and shapes["square"].name == "square"
    assert "square" in shapes and "circle" not in shapes and len(shapes) == 3
    assert [name for name, _ in shapes.items()] == shapes.names()


def test_names_and_tags_filter(shapes):
    assert shapes.names(sides=4) == ["square", "rectangle"]
    assert shapes.names(sides=5) == []
    assert shapes.tags("triangle") == {"sides": 3}


def test_register_returns_the_object_unchanged():
    numbers = Registry("number")

    def one():
        return 1

    assert numbers.register()(one) is one and numbers.get("one") is one


def test_unknown_name_is_one_line_naming_the_choices(shapes):
    with pytest.raises(ShapeError) as caught:
        shapes.get("circle")
    assert str(caught.value) == "unknown shape 'circle'; use one of square, triangle, rectangle (see `shapes --list`)"
    with pytest.raises(ShapeError, match="unknown shape 'circle'"):
        shapes["circle"]
    with pytest.raises(ShapeError, match="unknown shape"):
        shapes.tags("circle")


def test_registering_a_name_twice_raises(shapes):
    with pytest.raises(ValueError, match="registered twice"):
        shapes.add("square", object())
    with pytest.raises(ValueError, match="registered twice"):
        shapes.register("triangle")(lambda: None)
    assert shapes.names() == ["square", "triangle", "rectangle"]


# The registries of the library

def test_criteria_are_tagged_by_axis():
    from neurotomy.scores import CRITERIA, criteria_table

    assert CRITERIA.names(axis="class") == ["class_activation", "class_taylor"]
    assert CRITERIA.names(axis="unit")[:3] == ["random", "l1", "l2"]
    assert sorted(CRITERIA.names(axis="unit") + CRITERIA.names(axis="class")) == sorted(CRITERIA)
    table = criteria_table()
    assert [row["name"] for row in table] == CRITERIA.names()
    assert {row["axis"] for row in table} == {"unit", "class"}


def test_every_criterion_and_method_names_its_paper():
    from neurotomy.explain import METHODS
    from neurotomy.scores import CRITERIA

    assert all(cls.paper for _, cls in CRITERIA.items())
    assert all(method.paper and method.name == name for name, method in METHODS.items())


def test_criterion_getters_refuse_the_other_axis():
    from neurotomy.scores import get_classwise_criterion, get_criterion

    with pytest.raises(NeurotomyError, match=r"class-wise criterion .* get_classwise_criterion\('class_taylor'\)"):
        get_criterion("class_taylor")
    with pytest.raises(NeurotomyError, match=r"per-unit criterion .* get_criterion\('l1'\)"):
        get_classwise_criterion("l1")
    with pytest.raises(NeurotomyError, match="unknown criterion 'nope'; use one of random, l1"):
        get_criterion("nope")
    assert get_classwise_criterion("class_taylor").name == "class_taylor"
    assert get_criterion("l1").name == "l1"


def test_methods_list_in_the_order_the_cli_and_benchmarks_show():
    from neurotomy.explain import METHODS, method_names

    assert METHODS.names() == [
        "gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "smoothgrad_sq",
        "gradcam", "gradcam_pp", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam",
        "pathway", "occlusion", "rise", "rollout", "grad_rollout", "crp", "random", "sobel"]
    assert method_names("control") == ["random", "sobel"] and method_names() == METHODS.names()


def test_metrics_say_which_direction_is_better():
    from neurotomy.explain.rating import METRICS, better_direction

    assert {name: better_direction(name) for name in METRICS} == {
        "deletion": "lower", "insertion": "higher", "morf": "higher", "lerf": "lower",
        "sanity_cascading": "lower", "sanity_independent": "lower"}
    assert METRICS.names(better="higher") == ["insertion", "morf"]
