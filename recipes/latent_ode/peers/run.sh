#!/usr/bin/env bash
# PyPOTS's classifiers on the zoo's PhysioNet 2012 mortality split, in an environment of their
# own (pinned; the zoo's dependencies are untouched). From the repository root:
#   ZOO_DATA_DIR=../shared/data bash recipes/latent_ode/peers/run.sh [extra pypots_mortality.py args]
# BenchPOTS's own split instead (reported apart, never in the zoo's column):
#   ZOO_DATA_DIR=../shared/data bash recipes/latent_ode/peers/run.sh --benchpots [its args]
set -euo pipefail
PEERS=${PEERS_VENV:-.venv-peers}
if [ ! -x "$PEERS/bin/python" ]; then
  python3 -m venv "$PEERS"
  "$PEERS/bin/pip" install -q torch==2.14.1 pypots==1.5
fi
if [ "${1:-}" = "--benchpots" ]; then
  shift
  OUT=bench/results/peers/time-series-classification.physionet2012.benchpots-set-a.json
  mkdir -p runs/peers
  "$PEERS/bin/python" recipes/latent_ode/peers/benchpots_mortality.py \
    "${ZOO_DATA_DIR:?set ZOO_DATA_DIR to the folder holding physionet-2012}/physionet-2012" \
    --out "$OUT" --predictions runs/peers/benchpots_predictions.csv "$@"
  .venv/bin/python recipes/latent_ode/peers/compare.py runs/peers/benchpots_predictions.csv \
    --peers "$OUT" --intervals-only
  exit 0
fi
DATA=${PEERS_DATA:-runs/peers/physionet_hourly.npz}
mkdir -p "$(dirname "$DATA")"
[ -f "$DATA" ] || .venv/bin/python recipes/latent_ode/peers/export_hourly.py "$DATA"
# the recorded run, the default: GRU-D for 100 epochs and BRITS for 50 (about 15 and 25 minutes
# on one thread, within the ODE-RNN mortality run's 28), each keeping its best validation epoch;
# another choice, e.g. `run.sh --models GRUD:20 Raindrop:10`
OUT=bench/results/peers/time-series-classification.physionet2012.json
"$PEERS/bin/python" recipes/latent_ode/peers/pypots_mortality.py "$DATA" \
  --out "$OUT" --predictions runs/peers/peer_predictions.csv "$@"
# the zoo's mortality checkpoints on the same patients: each AUROC's interval and DeLong's
# paired test of every checkpoint against every peer, written into $OUT and beside it
.venv/bin/python recipes/latent_ode/peers/compare.py runs/peers/peer_predictions.csv --peers "$OUT"
