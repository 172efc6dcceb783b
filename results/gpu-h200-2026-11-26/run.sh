# One device session: GPU epoch times of three widths, then a full-width UIU-Net trained on SIRST 5050_train:fit
# (standard recipe, schedule sized to the time left), selected on the hold-out, scored once on 5050_test.
T0=$(date +%s); BUDGET=${BUDGET:-540}; MODEL=${MODEL:-uiunet}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD UIUNET_DATA=$PWD/.gpu/data MPLBACKEND=Agg PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/machine.txt
python3 -c "import torch; print('torch', torch.__version__)" | tee -a $OUT/machine.txt
nproc | tee -a $OUT/machine.txt
COMMON="dataset=sirst train_split=5050_train:fit val_split=5050_train:holdout in_channels=3 recipe=standard loss=softiou lr=0.0005 batch_size=8 img_size=256 seed=0 results_dir=/tmp/res $EXTRA"
for m in ${CALIB:-uiunet_tiny uiunet_small uiunet}; do
  python3 .gpu/nbrun.py nbs/train.ipynb $COMMON model=$m epochs=400 val_every=1 stop_after=3 out_dir=/tmp/cal name=cal-$m > /tmp/cal-$m.txt 2>&1 || { tail -30 /tmp/cal-$m.txt; exit 1; }
  echo "== $m" >> $OUT/calib.csv; cat /tmp/cal/cal-$m/log.csv >> $OUT/calib.csv
done
cat $OUT/calib.csv
# the full model's epoch time (training + a validation every 4 epochs) from its third epoch
SEC=$(python3 -c "import csv; r=list(csv.DictReader(open('/tmp/cal/cal-$MODEL/log.csv')))[-1]; print(float(r['seconds']))")
LEFT=$(( BUDGET - ($(date +%s) - T0) - 60 ))
EPOCHS=$(python3 -c "import math; e=min(${EPOCHS_MAX:-400}, int($LEFT/($SEC*1.1+0.4)) // 20 * 20); print(max(e, 20))")
echo "full model: $SEC s per epoch, $LEFT s left: $EPOCHS epochs" | tee $OUT/plan.txt
NAME=sirst-$MODEL-5050-softiou-gpu-e$EPOCHS
timeout $(( LEFT + 20 )) python3 .gpu/nbrun.py nbs/train.ipynb $COMMON model=$MODEL epochs=$EPOCHS val_every=4 out_dir=/tmp/runs name=$NAME > /tmp/train.txt 2>&1
echo "train rc $?"; grep -v "it/s\]\|^$" /tmp/train.txt | tail -5
cp /tmp/runs/$NAME/log.csv /tmp/runs/$NAME/run.json /tmp/runs/$NAME/best.json $OUT/ 2>/dev/null
python3 .gpu/nbrun.py nbs/evaluate.ipynb run=/tmp/runs/$NAME dataset=sirst split=5050_test out_dir=/tmp/runs results_dir=/tmp/res name=$NAME-5050_test $EXTRA > /tmp/eval.txt 2>&1
echo "eval rc $?"; tail -15 /tmp/eval.txt
cp /tmp/res/$NAME-5050_test/metrics.json $OUT/test_metrics.json
echo "total $(( $(date +%s) - T0 )) s"
