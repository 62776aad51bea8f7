"""The engines' seams: one parquet schema, one list of engines."""

import typing

import pytest

from rejoinder.data.build import BuildConfig, Source
from rejoinder.data.config import Engine
from rejoinder.data.engines import ENGINES
from rejoinder.data.records import arrow_schema
from rejoinder.errors import RejoinderError


def test_the_spark_schema_is_derived_from_the_arrow_schema():
    pytest.importorskip("pyspark")
    from pyspark.sql.types import ArrayType, StringType, StructField, StructType

    from rejoinder.data.engines.spark import spark_schema

    # The schema the Spark engine wrote by hand before it derived it.
    turn = StructType([StructField(n, StringType()) for n in ("text", "speaker", "emotion", "act")])
    by_hand = StructType(
        [
            StructField("id", StringType()),
            StructField("source", StringType()),
            StructField("turns", ArrayType(turn)),
            StructField("group", StringType()),
            StructField("meta", StringType()),
        ]
    )
    assert spark_schema(arrow_schema()) == by_hand


def test_every_engine_a_config_can_name_is_registered():
    assert set(ENGINES) == set(typing.get_args(Engine))
    with pytest.raises(RejoinderError, match="unknown engine 'dask'; choose local or spark"):
        BuildConfig(sources=[Source("chitchat")], out="x", engine="dask")


def test_an_unknown_source_kind_is_refused_before_anything_runs():
    with pytest.raises(RejoinderError, match="unknown source 'usenet'; sources are reddit, "):
        BuildConfig(sources=[Source("usenet")], out="x")
