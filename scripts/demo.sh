#!/usr/bin/env bash
# The main job for now: build the dataset of the bundled Chit-Chat corpus, make a
# checkpoint, show what the model sees, and chat with it from a script. The model is
# randomly initialised (training arrives with `rejoinder train`), so its replies are
# noise; every other part is the real thing.
set -euo pipefail
cd "$(dirname "$0")/.."
rejoinder=.venv/bin/rejoinder
out=${OUT:-demo}

set -x
"$rejoinder" data build chitchat --out "$out/chitchat" --force
"$rejoinder" data show "$out/chitchat" -n 1
"$rejoinder" init --size tiny --format dialogpt --out "$out/tiny" --force
"$rejoinder" encode --model "$out/tiny" --tokens "Hello!" "Hi, how are you?"
printf '/set do_sample=true top_p=0.9 max_new_tokens=8 seed=0\nHello!\nHow are you?\nquit\n' \
  | "$rejoinder" chat "$out/tiny"
