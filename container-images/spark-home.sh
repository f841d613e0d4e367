#!/usr/bin/env bash
# Lay out a SPARK_HOME for Spark on Kubernetes at DEST (the image: /opt/spark) from the installed
# pyspark, which is a whole Spark distribution (bin/, jars/) without the layout Spark's pods expect:
#   DEST/bin, DEST/jars   links to pyspark's own launchers and jars (one copy of Spark in the image)
#   DEST/conf             an empty directory: the driver pod mounts spark.properties here
#   DEST/work-dir         the executors' working directory (an executor fetches the app's jars and
#                         files into its working directory, so it must be writable by the pod's user)
# Usage: spark-home.sh DEST [PYTHON]   (PYTHON: the interpreter that has pyspark; default python3)
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: spark-home.sh DEST [PYTHON]" >&2
  exit 2
fi
dest=$1
python=${2:-python3}
pyspark=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))') || {
  echo "spark-home.sh: $python cannot import pyspark: install the project's dependencies first" >&2
  exit 2
}
mkdir -p "$dest/conf" "$dest/work-dir"
for part in bin jars; do
  [[ -d "$pyspark/$part" ]] || { echo "spark-home.sh: $pyspark has no $part/: not a pyspark distribution" >&2; exit 2; }
  ln -sfn "$pyspark/$part" "$dest/$part"
done
echo "$dest"
