"""PNG of training curves (loss and accuracy per epoch) from metrics rows."""


def save_curves(rows, path, title=""):
    """Plot rows (dicts with epoch, train_loss, val_loss, train_accuracy, val_accuracy) to path.

    Returns False, drawing nothing, when matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in rows], "s-", label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
