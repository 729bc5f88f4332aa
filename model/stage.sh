#!/bin/sh
# Stage the inputs of a device run into .carry/ (ignored by git; named in the run's `carry`).
#   model/stage.sh run1            corpus: all training shards + valid-00 (31 MB)
#   model/stage.sh run2 FILES_AT   checkpoint of run 1 (from the run's files_at) + valid-00 + train-00
set -e
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/corpus}
[ -d "$CORPUS" ] || CORPUS=/work/shared/data/corpus
case "$1" in
  run1)
    mkdir -p .carry/data
    cp "$CORPUS"/train-0*.txt.xz "$CORPUS"/valid-00.txt.xz .carry/data/
    ;;
  run2)
    [ -n "$2" ] || { echo "usage: $0 run2 FILES_AT_OF_RUN1"; exit 2; }
    mkdir -p .carry/data2 .carry/ckpt
    cp "$CORPUS"/train-00.txt.xz "$CORPUS"/valid-00.txt.xz .carry/data2/
    cp "$2"/base-*.pt "$2"/indexer-*.pt "$2"/cfg.json .carry/ckpt/
    ;;
  *) echo "usage: $0 run1 | run2 FILES_AT"; exit 2 ;;
esac
du -sh .carry/*
