"""Terminal tables: a class the model never predicts has no precision, and the table says so."""

from neurotomy.report.tables import format_metrics


def test_a_class_never_predicted_reads_n_a_not_zero():
    metrics = {"accuracy": 0.5, "n": 2, "classes": ["coat", "shirt"], "per_class_precision": [0.5, None],
               "per_class_recall": [1.0, 0.0], "confusion": [[1, 0], [1, 0]]}
    rows = format_metrics(metrics).splitlines()
    assert rows[3].split() == ["coat", "0.5000", "1.0000"]
    assert rows[4].split() == ["shirt", "n/a", "0.0000"]


def test_a_class_with_no_test_image_has_no_recall():
    metrics = {"accuracy": 1.0, "n": 1, "classes": ["coat", "shirt"], "per_class_precision": [1.0, None],
               "per_class_recall": [1.0, None], "confusion": [[1, 0], [0, 0]]}
    assert format_metrics(metrics).splitlines()[4].split() == ["shirt", "n/a", "n/a"]
