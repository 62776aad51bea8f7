"""From raw corpora to filtered multi-turn dialogue datasets (`rejoinder data`).

- `readers/`: the registry of source kinds (`SOURCES`) and one reader per corpus;
  `reddit`: Pushshift dumps and the tree walk; `io`: files, compressed or not.
- `filters`: DialoGPT's filters and the trigram sketch; `stages`: every step of a
  build that does not depend on the engine.
- `engines/`: local and Spark, which only group and move records between the stages.
- `config`, `build`: what a build is asked to do, and doing it atomically.
- `records`: the records and the parquet schema, and `read_dialogues` to read a split.
- `commands`: the `data build` and `data show` verbs.
"""
