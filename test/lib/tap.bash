# Shared by the TAP shell tests: ok GOT EXPECTED DESCRIPTION prints one TAP line; finish prints the
# plan and exits non-zero when anything failed.
n=0; failed=0
ok() {
  n=$((n + 1))
  if [ "$1" = "$2" ]; then echo "ok $n - $3"
  else echo "not ok $n - $3"; echo "#   got:      '$1'"; echo "#   expected: '$2'"; failed=1; fi
}
finish() { echo "1..$n"; exit $failed; }
