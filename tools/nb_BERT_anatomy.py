from tools.anatomy_notebooks import anatomy_notebook

anatomy_notebook("BERT")
