"""Unit tests of the benchmark plumbing: index parsing, image selection, rows store, dispatcher."""

from __future__ import annotations

import csv

import pytest
import torch

from bench_tiny import make_data
from camlib.bench import __main__ as dispatcher
from camlib.bench.data import DataError, load_batch, load_index, select
from camlib.bench.report import RowStore, best_indices, check_config, markdown_table, write_config


def test_load_index_groups_boxes(tmp_path):
    root = make_data(tmp_path, n=4)
    records = load_index(root)
    assert [r.file for r in records] == [f"images/img_{i:03d}.png" for i in range(4)]
    assert [len(r.boxes) for r in records] == [1, 2, 1, 2]
    images, boxes = load_batch(root, records[:2], (16, 16))
    assert images.shape == (2, 3, 16, 16) and 0 <= float(images.min()) and float(images.max()) <= 1
    # 24 wide x 20 high -> 16 x 16: x scales by 2/3, y by 4/5 (inclusive pixel boxes)
    assert boxes[0].tolist() == [[1, 2, 8, 12]]
    assert boxes[1].shape == (2, 4) and boxes[1].dtype == torch.long


def test_load_index_errors(tmp_path):
    with pytest.raises(DataError, match="index.csv"):
        load_index(tmp_path)
    (tmp_path / "index.csv").write_text("file,class_index\na.png,1\n")
    with pytest.raises(DataError, match="lacks the columns"):
        load_index(tmp_path)
    (tmp_path / "index.csv").write_text("file,class_index,class_name,xmin,ymin,xmax,ymax\n"
                                        "a.png,1,x,0,0,5,5\na.png,2,y,0,0,5,5\n")
    with pytest.raises(DataError, match="two classes"):
        load_index(tmp_path)
    (tmp_path / "index.csv").write_text("file,class_index,class_name,xmin,ymin,xmax,ymax\na.png,1,x,,,,\n")
    (record,) = load_index(tmp_path)
    assert record.boxes == ()
    with pytest.raises(DataError, match="does not exist"):
        load_batch(tmp_path, [record], (8, 8))


def test_select_first_or_seeded_and_nested(tmp_path):
    records = load_index(make_data(tmp_path, n=6))
    assert select(records, 3) == records[:3]
    assert select(records) == records
    a, b = select(records, 2, seed=5), select(records, 4, seed=5)
    assert b[:2] == a and len(set(r.file for r in b)) == 4
    assert select(records, None, seed=5) != records  # a permutation
    with pytest.raises(ValueError):
        select(records, 0)


def test_row_store_merge_dedupes_and_sorts(tmp_path):
    fields, key = ["image", "method", "value"], ["image", "method"]
    store = RowStore(tmp_path, "x", fields, key)
    for rank, rows in ((1, [("b", "m", 1.5), ("a", "z", 2.0)]), (0, [("a", "m", 0.1), ("b", "m", 9.9)])):
        part = RowStore(tmp_path, "x", fields, key)
        part.open(rank, distributed=True)
        part.append([dict(zip(fields, r)) for r in rows])
        part.close()
    assert store.done() == {("a", "m"), ("a", "z"), ("b", "m")}
    rows = store.merge()
    assert [(r["image"], r["method"]) for r in rows] == [("a", "m"), ("a", "z"), ("b", "m")]
    assert not list(tmp_path.glob("x.rows.rank*.csv"))
    with open(tmp_path / "x.csv", newline="") as fh:
        assert list(csv.reader(fh))[1] == ["a", "m", "0.1"]
    # floats round-trip exactly
    value = float(torch.tensor(0.1234567, dtype=torch.float32))
    store.open()
    store.append([{"image": "c", "method": "m", "value": value}])
    store.close()
    assert float(store.read_all()[-1]["value"]) == value


def test_row_store_refuses_other_columns(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        RowStore(tmp_path, "x", ["image", "method"], ["image"]).done()


def test_config_check(tmp_path):
    path = tmp_path / "c.json"
    check_config(path, {"a": 1})  # nothing yet
    write_config(path, {"a": 1, "b": "x"})
    check_config(path, {"b": "x", "a": 1})
    with pytest.raises(ValueError, match="a: 1 -> 2"):
        check_config(path, {"a": 2, "b": "x"})


def test_markdown_helpers():
    assert best_indices([1.0, 3.0, 3.0, float("nan")], higher=True) == [1, 2]
    assert best_indices([1.0, 3.0], higher=False) == [0]
    assert best_indices([1.0], higher=True) == []
    assert markdown_table(["A", "B"], [["x", "1"]]).splitlines() == ["| A | B |", "|:---|---:|", "| x | 1 |"]


def test_dispatcher(capsys, monkeypatch):
    assert dispatcher.main([]) == 2
    assert dispatcher.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("faithfulness", "shap-agreement", "shap-table1", "speed"):
        assert name in out
    assert dispatcher.main(["nope"]) == 2
    monkeypatch.setitem(dispatcher.COMMANDS, "ghost", ("camlib.bench.no_such_module", "main", ""))
    assert dispatcher.main(["ghost"]) == 2
    assert "not installed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        dispatcher.main(["faithfulness", "--help"])
    assert "--n-images" in capsys.readouterr().out


def test_sub_commands_are_imported_lazily():
    import subprocess
    import sys

    code = ("import sys, camlib.bench.__main__ as m; "
            "assert 'camlib.bench.faithfulness' not in sys.modules and 'camlib.bench.shap' not in sys.modules; "
            "assert 'camlib.bench.speed' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
