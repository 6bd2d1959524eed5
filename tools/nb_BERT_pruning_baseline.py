from tools.anatomy_notebooks import baseline_notebook

baseline_notebook("BERT")
