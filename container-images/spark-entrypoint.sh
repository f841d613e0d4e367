#!/usr/bin/env bash
# The image's entry point. Spark on Kubernetes (the Kubeflow Spark Operator's SparkApplication, or any
# spark-submit --master k8s://) starts the image with arguments only and leaves the rest to the entry point:
#
#   driver --properties-file /opt/spark/conf/spark.properties --class MAIN APP_FILE [ARGS...]
#       the driver pod: spark-submit in client mode inside the pod, bound to the pod's address
#       (SPARK_DRIVER_BIND_ADDRESS, which the driver pod's spec sets to its IP);
#   executor
#       an executor pod: Kubernetes' executor backend in a JVM sized by SPARK_EXECUTOR_MEMORY, told by the
#       SPARK_* variables of the executor pod's spec where its driver is and who it is, with the pod's
#       SPARK_JAVA_OPT_<n> options in the order of n.
#
# Any other arguments run as a command, unchanged (a KFP step, the KServe container and the sink name a
# command of their own; `docker run IMAGE` runs the image's CMD). The variables' names are Spark's
# (org.apache.spark.deploy.k8s.Constants); tests/test_spark_pods.py checks them against the bundled jar.
set -euo pipefail

me=genctr-spark-entrypoint

die() {
  echo "$me: $*" >&2
  exit 2
}

if [[ $# -eq 0 ]]; then
  die "no arguments: expected 'driver ...', 'executor' or a command to run"
fi

role=$1
if [[ "$role" != driver && "$role" != executor ]]; then
  exec "$@"
fi
shift

spark_home=${SPARK_HOME:-}
if [[ -z "$spark_home" ]]; then
  spark_home=$("${PYSPARK_PYTHON:-python3}" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))') \
    || die "SPARK_HOME is not set and ${PYSPARK_PYTHON:-python3} cannot import pyspark"
fi
[[ -x "$spark_home/bin/spark-submit" && -d "$spark_home/jars" ]] \
  || die "SPARK_HOME=$spark_home is not a Spark distribution (no bin/spark-submit or jars/)"
export SPARK_HOME=$spark_home

# Hadoop's login looks the user up by uid; a pod run under an arbitrary uid (OpenShift's restricted
# policy) has no passwd entry, and the JVM then fails with an unhelpful NullPointerException.
uid=$(id -u)
if ! getent passwd "$uid" >/dev/null 2>&1; then
  if [[ -w /etc/passwd ]]; then
    echo "spark:x:$uid:$(id -g):anonymous uid:${HOME:-/tmp}:/bin/false" >>/etc/passwd
  else
    echo "$me: warning: uid $uid has no passwd entry and /etc/passwd is read-only; Hadoop's login will" \
      "fail: run the pod as the image's user (runAsUser: 1000)" >&2
  fi
fi

# Where an executor fetches the application's jars and files (its working directory) must be writable.
workdir=${GENCTR_SPARK_WORKDIR:-$spark_home/work-dir}
if [[ -d "$workdir" ]]; then
  cd "$workdir"
fi

case "$role" in
  driver)
    [[ -n "${SPARK_DRIVER_BIND_ADDRESS:-}" ]] \
      || die "driver: SPARK_DRIVER_BIND_ADDRESS is not set (the driver pod's spec sets it to the pod's IP)"
    [[ $# -gt 0 ]] || die "driver: no spark-submit arguments (expected --properties-file ... --class ... APP_FILE)"
    # --deploy-mode client: the properties say cluster (how the app was submitted); in the pod the driver
    # runs here. Executors are told the driver pod's address through their environment.
    exec "$spark_home/bin/spark-submit" \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client "$@"
    ;;
  executor)
    [[ $# -eq 0 ]] || die "executor: takes no arguments (its settings come from SPARK_* variables), got: $*"
    missing=()
    for name in SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_EXECUTOR_MEMORY \
      SPARK_APPLICATION_ID SPARK_EXECUTOR_POD_IP SPARK_EXECUTOR_POD_NAME SPARK_RESOURCE_PROFILE_ID; do
      [[ -n "${!name:-}" ]] || missing+=("$name")
    done
    [[ ${#missing[@]} -eq 0 ]] \
      || die "executor: ${missing[*]} not set (Spark's executor pod spec sets them; is this an executor pod?)"
    # One option per variable, in the order of the suffix: values may hold spaces.
    java_opts=()
    while IFS= read -r name; do
      java_opts+=("${!name}")
    done < <(compgen -e | grep -E '^SPARK_JAVA_OPT_[0-9]+$' | sort -t_ -k4,4n || true)
    # The configuration directory first (log4j2.properties), then the pod's extra classpath
    # (spark.executor.extraClassPath), a Hadoop-free build's Hadoop, and Spark's jars.
    classpath="${SPARK_CONF_DIR:-$spark_home/conf}"
    [[ -z "${HADOOP_CONF_DIR:-}" ]] || classpath="$classpath:$HADOOP_CONF_DIR"
    [[ -z "${SPARK_CLASSPATH:-}" ]] || classpath="$classpath:$SPARK_CLASSPATH"
    [[ -z "${SPARK_DIST_CLASSPATH:-}" ]] || classpath="$classpath:$SPARK_DIST_CLASSPATH"
    classpath="$classpath:$spark_home/jars/*"
    java=java
    [[ -z "${JAVA_HOME:-}" ]] || java="$JAVA_HOME/bin/java"
    exec "$java" "${java_opts[@]}" "-Xms$SPARK_EXECUTOR_MEMORY" "-Xmx$SPARK_EXECUTOR_MEMORY" -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
esac
