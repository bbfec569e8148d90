"""Check groups for the client tests: each group runs, reports one line,
and a failure does not stop the next group."""

results = {"passed": 0, "failed": 0}


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def test(fn):
    """Runs one check group; a failure is reported and the next group still runs."""
    try:
        print(f"ok - {fn.__doc__}: {fn()}", flush=True)
        results["passed"] += 1
    except Exception as e:  # noqa: BLE001 - any error fails the group, with its message
        print(f"FAIL - {fn.__doc__}: {type(e).__name__}: {e}", flush=True)
        results["failed"] += 1
    return fn


def finish(name):
    """Prints the summary line and returns the exit code."""
    print(f"{name}: {results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0
