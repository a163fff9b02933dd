"""Each bad input gets a clear error naming the field, the value and what was expected."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from immunegym.data import (
    DataValidationError,
    from_counts_table,
    get_fields,
    read_h5ad,
    sample_distributions,
    setup_anndata,
)
from immunegym.ontology import UnmappedLabelError

KEYS = dict(patient_key="patient", sample_key="sample", label_key="cell_type",
            time_key="day", therapy_key="therapy", response_key="response")


def test_registry_round_trips_through_uns(registered):
    fields = get_fields(registered)
    assert fields.time_key == "day" and fields.label_convention is None


def test_registry_survives_h5ad(registered, tmp_path):
    path = tmp_path / "cells.h5ad"
    registered.write_h5ad(path)
    assert get_fields(read_h5ad(path)) == get_fields(registered)


def test_unregistered_anndata(cells):
    with pytest.raises(DataValidationError, match="call immunegym.data.setup_anndata"):
        sample_distributions(cells)


def test_missing_obs_column(cells):
    with pytest.raises(DataValidationError, match=r"time_key='days'.*no column 'days'"):
        setup_anndata(cells, **{**KEYS, "time_key": "days"})


def test_nan_time(cells):
    cells.obs.loc[cells.obs_names[3], "day"] = np.nan
    with pytest.raises(DataValidationError, match=r"time_key='day'.*NaN time.*'cell3'"):
        setup_anndata(cells, **KEYS)


def test_negative_time(cells):
    cells.obs.loc[cells.obs_names[0], "day"] = -5.0
    with pytest.raises(DataValidationError, match=r"value -5.0 of cell 'cell0' is negative"):
        setup_anndata(cells, **KEYS)


def test_non_numeric_time(cells):
    cells.obs["day"] = cells.obs["day"].astype(object)
    cells.obs.loc[cells.obs_names[1], "day"] = "week 3"
    with pytest.raises(DataValidationError, match=r"'week 3'.*is not a number"):
        setup_anndata(cells, **KEYS)


def test_duplicate_cell_ids(cells):
    cells.obs_names = ["same"] * 2 + list(cells.obs_names[2:])
    with pytest.raises(DataValidationError, match=r"must be unique.*\['same'\]"):
        setup_anndata(cells, **KEYS)


def test_sample_with_zero_cells_as_empty_category(cells):
    cells.obs["sample"] = pd.Categorical(cells.obs["sample"],
                                         categories=[*cells.obs["sample"].unique(), "ghost"])
    with pytest.raises(DataValidationError, match=r"sample 'ghost' has zero cells"):
        setup_anndata(cells, **KEYS)


def test_sample_with_zero_counted_cells(cells):
    only_junk = cells.obs["sample"] == "p3_d14"
    cells.obs["cell_type"] = cells.obs["cell_type"].where(~only_junk, "Doublets")
    setup_anndata(cells, **KEYS)
    with pytest.raises(DataValidationError, match=r"sample 'p3_d14' has zero cells"):
        sample_distributions(cells)


def test_sample_spanning_two_patients(cells):
    cells.obs.loc[cells.obs_names[0], "patient"] = "p2"
    with pytest.raises(DataValidationError, match=r"patient_key='patient'.*sample 'p1_d0'"):
        setup_anndata(cells, **KEYS)


def test_unknown_therapy(cells):
    cells.obs.loc[cells.obs["sample"] == "p3_d0", "therapy"] = "homeopathy"
    with pytest.raises(DataValidationError, match=r"therapy_key='therapy'.*'homeopathy'"):
        setup_anndata(cells, **KEYS)


def test_unknown_response(cells):
    cells.obs.loc[cells.obs["sample"] == "p3_d0", "response"] = "maybe"
    with pytest.raises(DataValidationError, match=r"response_key='response'.*'maybe'"):
        setup_anndata(cells, **KEYS)


def test_missing_patient(cells):
    cells.obs["patient"] = cells.obs["patient"].astype(object)
    cells.obs.loc[cells.obs_names[2], "patient"] = None
    with pytest.raises(DataValidationError, match=r"patient_key='patient'.*'cell2'"):
        setup_anndata(cells, **KEYS)


def test_unknown_label_in_strict_mode(cells):
    cells.obs.loc[cells.obs_names[0], "cell_type"] = "Cluster 7"
    setup_anndata(cells, **KEYS)
    with pytest.raises(UnmappedLabelError, match=r"label_key='cell_type'.*'Cluster 7'"):
        sample_distributions(cells, strict=True)
    dist = sample_distributions(cells, strict=False)  # not strict: excluded, not lost
    assert dist.n_excluded[0] == 1


def test_file_that_is_not_h5ad(tmp_path):
    path = tmp_path / "cells.h5ad"
    path.write_text("cell,type\nA,T\n")
    with pytest.raises(DataValidationError,
                       match=r"path: got .*an HDF5 file \(\.h5ad\); this file is not HDF5"):
        read_h5ad(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_h5ad(tmp_path / "absent.h5ad")


def test_empty_anndata():
    with pytest.raises(DataValidationError, match="no cells"):
        empty = pd.DataFrame({"patient": [], "sample": [], "cell_type": []},
                             index=pd.Index([], dtype=str))
        setup_anndata(ad.AnnData(obs=empty))


def _table():
    return pd.DataFrame({"sample": ["s1", "s2"], "patient": ["a", "b"],
                         "B cells": [3, 1], "Tregs": [2, 0], "Doublets": [1, 1]})


def test_counts_table_negative_counts():
    table = _table()
    table.loc[1, "Tregs"] = -2
    with pytest.raises(DataValidationError, match=r"sample 's2', column 'Tregs' has negative"):
        from_counts_table(table, ["B cells", "Tregs", "Doublets"])


def test_counts_table_zero_cells():
    table = _table()
    table.loc[1, ["B cells", "Tregs"]] = 0  # only junk left
    with pytest.raises(DataValidationError, match=r"sample 's2' has zero cells"):
        from_counts_table(table, ["B cells", "Tregs", "Doublets"])


def test_counts_table_nan_and_missing_column():
    table = _table()
    table.loc[0, "B cells"] = np.nan
    with pytest.raises(DataValidationError, match=r"column 'B cells' is nan"):
        from_counts_table(table, ["B cells", "Tregs"])
    with pytest.raises(DataValidationError, match=r"no column\(s\) \['NK'\]"):
        from_counts_table(_table(), ["B cells", "NK"])


def test_counts_table_unknown_column_label_strict():
    table = _table().rename(columns={"Tregs": "mystery"})
    with pytest.raises(UnmappedLabelError, match="count columns.*'mystery'"):
        from_counts_table(table, ["B cells", "mystery"])
