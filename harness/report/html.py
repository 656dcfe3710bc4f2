def write_report(results_dir):
    raise NotImplementedError
