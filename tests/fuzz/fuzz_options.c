/*
 * fuzz_options.c - the sanitizer defaults every harness starts with, so a
 * harness run by hand behaves as under scripts/fuzz.sh: UBSan reports stop
 * the run (and libFuzzer saves the input), and the UBSan reports listed in
 * ubsan.supp (known findings, see known-findings.md) are skipped. Setting
 * UBSAN_OPTIONS overrides these per option (DL_FUZZ_STRICT=1 in fuzz.sh
 * drops the suppressions).
 */
const char *__ubsan_default_options(void);

const char *__ubsan_default_options(void)
{
    return "print_stacktrace=1:halt_on_error=1:suppressions=" DL_FUZZ_UBSAN_SUPP;
}
