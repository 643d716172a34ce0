# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
#
# Source this file (bash) to enter the kosmos_ros environment made by tools/bootstrap.py:
#   source tools/env.sh            # KOSMOS_ROS_DISTRO=jazzy (default) or kilted
# It activates the venv, makes its ROS 2 libraries loadable, overlays the colcon install and
# keeps DDS traffic on loopback with a per-shell ROS_DOMAIN_ID.

_kosmos_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KOSMOS_ROS_DISTRO="${KOSMOS_ROS_DISTRO:-jazzy}"
if [ "$KOSMOS_ROS_DISTRO" = jazzy ]; then
  _kosmos_venv="$_kosmos_root/.venv"
else
  _kosmos_venv="$_kosmos_root/.venv-$KOSMOS_ROS_DISTRO"
fi
if [ ! -x "$_kosmos_venv/bin/python" ]; then
  echo "kosmos_ros: no environment at $_kosmos_venv; run: make setup" >&2
  return 1 2>/dev/null || exit 1
fi

export VIRTUAL_ENV="$_kosmos_venv"
export PATH="$_kosmos_venv/bin:$PATH"
export ROS_DISTRO="$KOSMOS_ROS_DISTRO"
_kosmos_site="$("$_kosmos_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
_kosmos_libs="$_kosmos_venv/lib"
for _d in "$_kosmos_site"/ros_*.libs; do
  [ -d "$_d" ] && _kosmos_libs="$_kosmos_libs:$_d"
done
export LD_LIBRARY_PATH="$_kosmos_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# rclpy's wheel bootstrapper would otherwise re-exec the Python process to set LD_LIBRARY_PATH.
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export AMENT_PREFIX_PATH="$_kosmos_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_kosmos_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"

# The colcon workspace (local_setup.bash only adds the workspace's own packages).
_kosmos_install="$_kosmos_root/install/$KOSMOS_ROS_DISTRO"
if [ -z "${KOSMOS_ROS_SKIP_WORKSPACE:-}" ] && [ -f "$_kosmos_install/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  COLCON_CURRENT_PREFIX="$_kosmos_install" . "$_kosmos_install/local_setup.bash"
fi

# DDS stays on loopback; each shell gets its own domain unless one is set.
# The range alone does it on Jazzy and Kilted (test_environment.py checks on the wire);
# ROS_LOCALHOST_ONLY is deprecated on Jazzy and would add two warnings to every log.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
unset ROS_LOCALHOST_ONLY
if [ -z "${ROS_DOMAIN_ID:-}" ]; then
  ROS_DOMAIN_ID=$(( (RANDOM % 100) + 1 ))
  export ROS_DOMAIN_ID
fi
unset _kosmos_root _kosmos_venv _kosmos_site _kosmos_libs _kosmos_install _d
